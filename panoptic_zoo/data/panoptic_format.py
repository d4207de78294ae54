"""
The COCO panoptic format on disk, read and checked with the standard library, NumPy and Pillow
only (no torch, no detectron2), so that the data check's command line starts in a fraction of a
second and the loader, the mappers and the check share one reading of every file.

* :func:`read_categories` and :func:`separated_metadata`: a panoptic JSON's classes, in
  detectron2's *separated* ids (things ``0 .. T-1``; stuff ``1 .. S``, stuff 0 = "any thing").
* :func:`parse_panoptic_json`: dataset dicts of a panoptic JSON and **every** problem in it, each
  naming the file, the record, the field and the fix.
* :func:`open_image_checked`, :func:`read_panoptic_png`, :func:`read_label_png`: an image or PNG,
  decoded and checked against its annotation.
* :func:`add_dataset_argument`: the ``--dataset NAME IMAGE_ROOT PANOPTIC_JSON PANOPTIC_ROOT``
  option of every command line that takes such a dataset.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "AnnotationError",
    "add_dataset_argument",
    "load_json",
    "open_image_checked",
    "parse_panoptic_json",
    "read_categories",
    "read_label_png",
    "read_panoptic_png",
    "separated_metadata",
]


class AnnotationError(ValueError):
    """
    A dataset annotation is malformed or disagrees with the files it describes.

    ``problems`` lists every problem found (one per line of the message); when the error comes
    from :func:`parse_panoptic_json`, ``records`` holds the dataset dicts of the annotations that
    had none, so that a check can go on reading their files.
    """

    def __init__(self, message: str, problems: Sequence[str] = (), records: Sequence = ()):
        super().__init__(message)
        self.problems = list(problems) or [message]
        self.records = list(records)


def load_json(json_file: str) -> Any:
    """The content of a JSON file; invalid JSON is an :class:`AnnotationError` naming the file."""
    with open(json_file, "rb") as f:
        try:
            return json.load(f)
        # Bytes that are no UTF-8 text, and nesting deeper than Python's recursion limit, are
        # invalid JSON files too, only reported differently.
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise AnnotationError(
                f"{json_file} is not valid JSON: {e} (fix: re-export the file)"
            ) from e


def read_categories(panoptic_json: str, content: Any = None) -> list[dict[str, Any]]:
    """
    The ``categories`` of a COCO panoptic JSON, checked (id, name, isthing on each); ``content``
    is the file's loaded JSON, when it has been read already.
    """
    if content is None:
        if not os.path.isfile(panoptic_json):
            raise FileNotFoundError(
                f"panoptic annotation file {panoptic_json} does not exist (relative paths are "
                f"from the working directory, {os.getcwd()})"
            )
        content = load_json(panoptic_json)
    categories = content.get("categories") if isinstance(content, dict) else None
    if not isinstance(categories, list) or not categories:
        raise AnnotationError(
            f"{panoptic_json} has no 'categories' list: add one entry per class "
            '({"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]})'
        )
    for index, category in enumerate(categories):
        for key in ("id", "name", "isthing"):
            if not isinstance(category, dict) or key not in category:
                raise AnnotationError(
                    f"{panoptic_json}: categories[{index}] has no '{key}' field "
                    "(each category needs id, name and isthing 0/1)"
                )
        if category["isthing"] not in (0, 1):
            raise AnnotationError(
                f"{panoptic_json}: categories[{index}] ({category['name']}) has isthing "
                f"{category['isthing']!r}; use 1 for countable things, 0 for stuff"
            )
    ids = [c["id"] for c in categories]
    if len(set(ids)) != len(ids) or 0 in ids:
        raise AnnotationError(
            f"{panoptic_json}: category ids must be unique and non-zero (0 is void), got {ids}"
        )
    return categories


def separated_metadata(categories: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """
    Metadata in separated ids for COCO-style ``categories`` (dicts with id, name, isthing,
    color), ordered by dataset id.
    """
    for key in ("id", "name", "isthing"):
        missing = [c for c in categories if key not in c]
        if missing:
            raise AnnotationError(f"category {missing[0]} has no '{key}' field")
    things = sorted((c for c in categories if c["isthing"]), key=lambda c: c["id"])
    stuff = sorted((c for c in categories if not c["isthing"]), key=lambda c: c["id"])
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [list(c.get("color", (220, 20, 60))) for c in things],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(things)},
        "stuff_classes": ["things"] + [c["name"] for c in stuff],
        "stuff_colors": [[82, 18, 128]] + [list(c.get("color", (128, 128, 128))) for c in stuff],
        # Dataset id 0 (never a real category) names the merged "things" class, as in
        # detectron2's separated COCO metadata; the semantic evaluator needs an id for it.
        "stuff_dataset_id_to_contiguous_id": {
            0: 0,
            **{c["id"]: i + 1 for i, c in enumerate(stuff)},
        },
    }


def _field(
    record: dict, key: str, where: str, json_file: str, kind: type | tuple[type, ...] | None = None
) -> Any:
    expected = (
        " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        if kind is not None
        else ""
    )
    fix = f"(fix: give {where} a '{key}'" + (f" of type {expected})" if expected else ")")
    if not isinstance(record, dict) or key not in record:
        raise AnnotationError(f"{json_file}: {where} has no '{key}' field {fix}")
    value = record[key]
    # bool is an int to Python, never to a JSON annotation.
    if kind is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise AnnotationError(
            f"{json_file}: {where} has '{key}' of type {type(value).__name__}, expected "
            f"{expected} {fix}"
        )
    return value


def _size_field(record: dict, key: str, where: str, json_file: str) -> int:
    value = _field(record, key, where, json_file, int)
    if value <= 0:
        raise AnnotationError(
            f"{json_file}: {where} has '{key}' {value}, expected a positive size "
            "(fix: set the image's size in pixels)"
        )
    return value


# Image ids are matched between 'images' and 'annotations': any JSON scalar that can be a key.
_IMAGE_ID_TYPES = (int, str)


def _separated_category(category, thing_ids: dict, stuff_ids: dict) -> tuple[int, bool] | None:
    """``(contiguous id, isthing)`` of a dataset category id, None if it is none (or no int)."""
    if not isinstance(category, int) or isinstance(category, bool):
        return None
    if category in thing_ids:
        return thing_ids[category], True
    if category in stuff_ids:
        return stuff_ids[category], False
    return None


def _segment(seg, seg_where: str, json_file: str, seen_ids: set, category_ids) -> dict:
    """One entry of ``segments_info`` in separated ids; raises AnnotationError if malformed."""
    thing_ids, stuff_ids, known_ids = category_ids
    seg_id = _field(seg, "id", seg_where, json_file)
    category = _field(seg, "category_id", seg_where, json_file)
    valid_id = isinstance(seg_id, int) and not isinstance(seg_id, bool) and seg_id > 0
    if not valid_id or seg_id in seen_ids:
        raise AnnotationError(
            f"{json_file}: {seg_where} has id {seg_id!r}; segment ids must be unique "
            "positive integers within an image (0 is void) (fix: renumber the image's segments "
            "in its segments_info and its PNG)"
        )
    seen_ids.add(seg_id)
    iscrowd = seg.get("iscrowd", 0)
    if iscrowd not in (0, 1) or isinstance(iscrowd, float):
        raise AnnotationError(
            f"{json_file}: {seg_where} has iscrowd {iscrowd!r}, not 0 or 1 (fix: set it to 1 "
            "for a crowd region, 0 otherwise)"
        )
    separated = _separated_category(category, thing_ids, stuff_ids)
    if separated is None:
        raise AnnotationError(
            f"{json_file}: {seg_where} has category_id {category!r}, which is not a category "
            f"of this dataset (known ids: {known_ids}) (fix: correct the category_id, or add "
            "the class to 'categories')"
        )
    contiguous, isthing = separated
    return {
        "id": seg_id,
        "category_id": contiguous,
        "isthing": isthing,
        "iscrowd": int(iscrowd),
        "area": seg.get("area"),
        "bbox": seg.get("bbox"),
    }


def parse_panoptic_json(
    content: Any,
    json_file: str,
    image_root: str,
    panoptic_root: str,
    metadata: dict[str, Any],
    sem_seg_root: str | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """
    Dataset dicts of the loaded COCO panoptic JSON ``content`` (``file_name``, ``image_id``,
    ``height``, ``width``, ``pan_seg_file_name``, ``segments_info`` with separated
    ``category_id`` and ``isthing``, and ``sem_seg_file_name`` when ``sem_seg_root`` is given),
    and every problem found, each naming ``json_file``, the record, the field and the fix. An
    annotation with a problem in its segments gives a dataset dict of its image alone (for a
    check to read), one with another problem none; the others are returned complete.
    """
    problems: list[str] = []
    category_ids = (
        metadata["thing_dataset_id_to_contiguous_id"],
        {k: v for k, v in metadata["stuff_dataset_id_to_contiguous_id"].items() if v != 0},
    )
    category_ids += (sorted([*category_ids[0], *category_ids[1]]),)
    try:
        image_list = _field(content, "images", "the top level", json_file, list)
    except AnnotationError as e:
        problems.append(str(e))
        image_list = []
    try:
        annotations = _field(content, "annotations", "the top level", json_file, list)
    except AnnotationError as e:
        problems.append(str(e))
        annotations = None

    images = {}
    # Images whose entry has a problem (already reported): their annotations are skipped.
    bad_image_ids = set()
    for index, image in enumerate(image_list):
        where = f"images[{index}]"
        image_id = None
        try:
            image_id = _field(image, "id", where, json_file, _IMAGE_ID_TYPES)
            if image_id in images or image_id in bad_image_ids:
                raise AnnotationError(
                    f"{json_file}: {where} repeats image id {image_id!r} (fix: give every "
                    "image its own id)"
                )
            image_where = f"image {image_id}"
            images[image_id] = {
                "file_name": os.path.join(
                    image_root, _field(image, "file_name", image_where, json_file, str)
                ),
                "height": _size_field(image, "height", image_where, json_file),
                "width": _size_field(image, "width", image_where, json_file),
            }
        except AnnotationError as e:
            problems.append(str(e))
            bad_image_ids.add(image_id)

    dataset_dicts = []
    annotated_images = set()
    for index, ann in enumerate(annotations or []):
        where = f"annotations[{index}]"
        try:
            image_id = _field(ann, "image_id", where, json_file, _IMAGE_ID_TYPES)
            png_name = _field(ann, "file_name", where, json_file, str)
            if image_id in bad_image_ids:
                continue
            if image_id not in images:
                raise AnnotationError(
                    f"{json_file}: {where} (file_name {png_name}) refers to image_id {image_id}, "
                    "which is not in 'images' (fix: list the image in "
                    "'images', or correct the image_id)"
                )
            if image_id in annotated_images:
                raise AnnotationError(
                    f"{json_file}: {where} (file_name {png_name}) is a second annotation of "
                    f"image_id {image_id} (fix: merge the image's annotations into one)"
                )
            annotated_images.add(image_id)
            segments_info = _field(ann, "segments_info", where, json_file, list)
        except AnnotationError as e:
            problems.append(str(e))
            continue
        segments, seen_ids, segment_problems = [], set(), []
        for seg_index, seg in enumerate(segments_info):
            seg_where = f"{where} ({png_name}) segments_info[{seg_index}]"
            try:
                segments.append(_segment(seg, seg_where, json_file, seen_ids, category_ids))
            except AnnotationError as e:
                segment_problems.append(str(e))
        if segment_problems:
            problems += segment_problems
            # Its image is still read by a check; its PNG cannot be compared with the segments.
            dataset_dicts.append({**images[image_id], "image_id": image_id})
            continue
        record = {
            **images[image_id],
            "image_id": image_id,
            "pan_seg_file_name": os.path.join(panoptic_root, png_name),
            "segments_info": segments,
        }
        if sem_seg_root is not None:
            record["sem_seg_file_name"] = os.path.join(sem_seg_root, png_name)
        dataset_dicts.append(record)
    if annotations == []:
        problems.append(
            f"{json_file} has no annotations (fix: add one annotation per image, with its "
            "segments_info)"
        )
    return dataset_dicts, problems


# What a corrupt, truncated or hostile image file makes PIL raise while opening and decoding it.
_UNREADABLE_IMAGE_ERRORS = (
    UnidentifiedImageError,
    Image.DecompressionBombError,  # a header claiming a huge size
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
)
# Modes and PNG raw modes of more than 8 bits per channel: converting them to 8-bit RGB would clip
# (16-bit grayscale becomes nearly all white) or garble (48-bit RGB), silently.
_HIGH_BIT_DEPTH_MODES = ("I", "F")


def open_image_checked(file_name: str) -> Image.Image:
    """
    The decoded image of ``file_name`` with its EXIF orientation applied, as detectron2's
    ``read_image`` does, after checking it has 8 bits per channel. Every failure names the file.
    """
    try:
        with open(file_name, "rb") as f:
            image = Image.open(f)
            raw_modes = " ".join(str(tile[3]) for tile in image.tile)
            if image.mode.startswith(_HIGH_BIT_DEPTH_MODES) or ";16" in raw_modes:
                raise AnnotationError(
                    f"{file_name} has more than 8 bits per channel (mode {image.mode} "
                    f"{raw_modes}); convert it to 8-bit, detectron2 would clip it silently"
                )
            image.load()
            return ImageOps.exif_transpose(image)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"image file {file_name} does not exist") from e
    except AnnotationError:
        raise  # a ValueError, but already the clear error
    except _UNREADABLE_IMAGE_ERRORS as e:
        raise AnnotationError(
            f"{file_name} is not a readable image ({type(e).__name__}: {e})"
        ) from e


def read_label_png(file_name: str) -> np.ndarray:
    """
    The label values of a semantic segmentation PNG: one 8-bit channel, read as stored (the
    indices of a palette PNG, not its colors), as detectron2's ``SemSegEvaluator`` reads them.
    """
    image = open_image_checked(file_name)
    if image.mode not in ("L", "P"):
        raise AnnotationError(
            f"{file_name}: a semantic label PNG must have one 8-bit channel (mode L or P), "
            f"got mode {image.mode}; converting it would turn colors into wrong labels"
        )
    return np.asarray(image, dtype=np.uint8)


# Panoptic PNGs hold ids as R + 256 G + 256^2 B: an RGB image, or a palette of RGB colors.
_PANOPTIC_PNG_MODES = ("RGB", "RGBA", "P")


def read_panoptic_png(dataset_dict: dict[str, Any], expected_shape: tuple[int, int]) -> np.ndarray:
    """
    Segment ids (R + 256 G + 256^2 B) of a dataset dict's panoptic PNG, checked against its
    ``segments_info`` and the image size.
    """
    file_name = dataset_dict["pan_seg_file_name"]
    image = open_image_checked(file_name)
    if image.mode not in _PANOPTIC_PNG_MODES:
        raise AnnotationError(
            f"{file_name}: a panoptic PNG must be 8-bit RGB (ids R + 256 G + 256^2 B), got "
            f"mode {image.mode}"
        )
    if image.mode == "RGBA" and image.getchannel("A").getextrema()[0] < 255:
        raise AnnotationError(
            f"{file_name}: panoptic PNG has transparent pixels; ids are RGB only, so its alpha "
            "channel cannot be meant as void or anything else: save it as RGB"
        )
    rgb = np.asarray(image.convert("RGB"), dtype=np.int64)
    if rgb.shape[:2] != tuple(expected_shape):
        raise AnnotationError(
            f"{file_name}: panoptic PNG is {rgb.shape[1]}x{rgb.shape[0]} (WxH) but image "
            f"{dataset_dict['file_name']} is {expected_shape[1]}x{expected_shape[0]}"
        )
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
    present = set(np.unique(ids).tolist()) - {0}
    annotated = {s["id"] for s in dataset_dict["segments_info"]}
    if present - annotated:
        raise AnnotationError(
            f"{file_name}: segment ids {_few(present - annotated)} appear in the PNG but not "
            "in its segments_info (they would be trained as void)"
        )
    if annotated - present:
        raise AnnotationError(
            f"{file_name}: segments_info lists ids {_few(annotated - present)} that do not "
            "appear in the PNG"
        )
    return ids


def _few(ids: set[int], limit: int = 10) -> str:
    """The sorted ids, only the first ``limit`` of them when there are more (e.g. a lossy PNG)."""
    ids = sorted(ids)
    return str(ids) if len(ids) <= limit else f"{ids[:limit]} (and {len(ids) - limit} more)"


def add_dataset_argument(parser) -> None:
    """``--dataset NAME IMAGE_ROOT PANOPTIC_JSON PANOPTIC_ROOT`` (repeatable) on ``parser``."""
    parser.add_argument(
        "--dataset",
        nargs=4,
        action="append",
        default=[],
        metavar=("NAME", "IMAGE_ROOT", "PANOPTIC_JSON", "PANOPTIC_ROOT"),
        help="register a COCO-panoptic-format dataset (as DATASETS.REGISTER does); "
        "use NAME in DATASETS.TRAIN / DATASETS.TEST",
    )
