"""
Loading and registering panoptic datasets in COCO panoptic format, with checked annotations.

Every panoptic dataset that panoptic_zoo registers uses *separated* contiguous ids, the
convention of detectron2's ``register_coco_panoptic_separated`` and Panoptic FPN:
thing categories map to ``0 .. T-1`` and stuff categories to ``1 .. S``, where stuff class 0
stands for "any thing" in semantic heads that merge all things into one class. Each segment of
a dataset dict carries ``isthing`` so the two id spaces never mix, and
:class:`detectron2.evaluation.COCOPanopticEvaluator` maps predictions back to dataset ids
through the same metadata.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.file_io import PathManager

__all__ = [
    "AnnotationError",
    "separated_metadata",
    "load_panoptic_json",
    "register_panoptic_dataset",
    "set_panoptic_metadata",
]


class AnnotationError(ValueError):
    """A dataset annotation is malformed or disagrees with the files it describes."""


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


def _require_file(path: str, what: str, hint: str) -> None:
    if not PathManager.isfile(path):
        raise FileNotFoundError(f"{what} {path} does not exist. {hint}")


def _require_dir(path: str, what: str, hint: str) -> None:
    if not PathManager.isdir(path):
        raise FileNotFoundError(f"{what} directory {path} does not exist. {hint}")


def _field(
    record: dict, key: str, where: str, json_file: str, kind: type | tuple[type, ...] | None = None
) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise AnnotationError(f"{json_file}: {where} has no '{key}' field")
    value = record[key]
    # bool is an int to Python, never to a JSON annotation.
    if kind is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise AnnotationError(
            f"{json_file}: {where} has '{key}' of type {type(value).__name__}, expected {expected}"
        )
    return value


def _size_field(record: dict, key: str, where: str, json_file: str) -> int:
    value = _field(record, key, where, json_file, int)
    if value <= 0:
        raise AnnotationError(f"{json_file}: {where} has '{key}' {value}, expected a positive size")
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


def load_panoptic_json(
    json_file: str,
    image_root: str,
    panoptic_root: str,
    metadata: dict[str, Any],
    sem_seg_root: str | None = None,
) -> list[dict[str, Any]]:
    """
    Read a COCO panoptic JSON into detectron2 dataset dicts (``file_name``, ``image_id``,
    ``height``, ``width``, ``pan_seg_file_name``, ``segments_info`` with contiguous
    ``category_id`` and ``isthing``, and ``sem_seg_file_name`` when ``sem_seg_root`` is given).

    Unlike detectron2's loader, image file names come from the JSON's ``images`` (any
    extension), and every malformed record raises :class:`AnnotationError` naming the file,
    the record and the field.
    """
    hint = "Check the dataset layout in docs/DATASETS.md (and $DETECTRON2_DATASETS)."
    _require_file(json_file, "panoptic annotation file", hint)
    _require_dir(image_root, "image", hint)
    _require_dir(panoptic_root, "panoptic PNG", hint)
    if sem_seg_root is not None:
        _require_dir(sem_seg_root, "semantic PNG", hint)
    with PathManager.open(json_file, "rb") as f:
        try:
            content = json.load(f)
        # Bytes that are no UTF-8 text, and nesting deeper than Python's recursion limit, are
        # invalid JSON files too, only reported differently.
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise AnnotationError(f"{json_file} is not valid JSON: {e}") from e

    thing_ids = metadata["thing_dataset_id_to_contiguous_id"]
    stuff_ids = {k: v for k, v in metadata["stuff_dataset_id_to_contiguous_id"].items() if v != 0}
    known_ids = sorted([*thing_ids, *stuff_ids])
    images = {}
    for index, image in enumerate(_field(content, "images", "the top level", json_file, list)):
        where = f"images[{index}]"
        image_id = _field(image, "id", where, json_file, _IMAGE_ID_TYPES)
        if image_id in images:
            raise AnnotationError(f"{json_file}: {where} repeats image id {image_id!r}")
        images[image_id] = image

    dataset_dicts = []
    annotated_images = set()
    for index, ann in enumerate(_field(content, "annotations", "the top level", json_file, list)):
        where = f"annotations[{index}]"
        image_id = _field(ann, "image_id", where, json_file, _IMAGE_ID_TYPES)
        png_name = _field(ann, "file_name", where, json_file, str)
        if image_id not in images:
            raise AnnotationError(
                f"{json_file}: {where} (file_name {png_name}) refers to image_id {image_id}, "
                "which is not in 'images'"
            )
        if image_id in annotated_images:
            raise AnnotationError(
                f"{json_file}: {where} (file_name {png_name}) is a second annotation of "
                f"image_id {image_id}"
            )
        annotated_images.add(image_id)
        image = images[image_id]
        image_where = f"image {image_id}"
        segments = []
        seen_ids = set()
        for seg_index, seg in enumerate(_field(ann, "segments_info", where, json_file, list)):
            seg_where = f"{where} ({png_name}) segments_info[{seg_index}]"
            seg_id = _field(seg, "id", seg_where, json_file)
            category = _field(seg, "category_id", seg_where, json_file)
            valid_id = isinstance(seg_id, int) and not isinstance(seg_id, bool) and seg_id > 0
            if not valid_id or seg_id in seen_ids:
                raise AnnotationError(
                    f"{json_file}: {seg_where} has id {seg_id!r}; segment ids must be unique "
                    "positive integers within an image (0 is void)"
                )
            seen_ids.add(seg_id)
            iscrowd = seg.get("iscrowd", 0)
            if iscrowd not in (0, 1) or isinstance(iscrowd, float):
                raise AnnotationError(
                    f"{json_file}: {seg_where} has iscrowd {iscrowd!r}, not 0 or 1"
                )
            separated = _separated_category(category, thing_ids, stuff_ids)
            if separated is None:
                raise AnnotationError(
                    f"{json_file}: {seg_where} has category_id {category!r}, which is not a "
                    f"category of this dataset (known ids: {known_ids})"
                )
            contiguous, isthing = separated
            segments.append(
                {
                    "id": seg_id,
                    "category_id": contiguous,
                    "isthing": isthing,
                    "iscrowd": int(iscrowd),
                    "area": seg.get("area"),
                    "bbox": seg.get("bbox"),
                }
            )
        record = {
            "file_name": os.path.join(
                image_root, _field(image, "file_name", image_where, json_file, str)
            ),
            "image_id": image_id,
            "height": _size_field(image, "height", image_where, json_file),
            "width": _size_field(image, "width", image_where, json_file),
            "pan_seg_file_name": os.path.join(panoptic_root, png_name),
            "segments_info": segments,
        }
        if sem_seg_root is not None:
            record["sem_seg_file_name"] = os.path.join(sem_seg_root, png_name)
        dataset_dicts.append(record)
    if not dataset_dicts:
        raise AnnotationError(f"{json_file} has no annotations")
    return dataset_dicts


def register_panoptic_dataset(
    name: str,
    metadata: dict[str, Any],
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    instances_json: str | None = None,
    sem_seg_root: str | None = None,
    prepare: Callable[[], Any] | None = None,
) -> None:
    """
    Register a COCO-panoptic-format dataset under ``name``, loaded by :func:`load_panoptic_json`.

    The metadata points the evaluators at their ground truth: ``panoptic_json``/``panoptic_root``
    for PQ, ``json_file`` (COCO instances) for AP and ``sem_seg_root`` for mIoU, when given.
    ``prepare`` runs before the first load (e.g. to generate a synthetic dataset on first use).
    """

    def load() -> list[dict[str, Any]]:
        if prepare is not None:
            prepare()
        return load_panoptic_json(panoptic_json, image_root, panoptic_root, metadata, sem_seg_root)

    DatasetCatalog.register(name, load)
    set_panoptic_metadata(
        name, metadata, image_root, panoptic_root, panoptic_json, instances_json, sem_seg_root
    )


def set_panoptic_metadata(
    name: str,
    metadata: dict[str, Any],
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    instances_json: str | None = None,
    sem_seg_root: str | None = None,
) -> None:
    """The metadata of a panoptic dataset: where each evaluator finds its ground truth."""
    extra = {}
    if instances_json is not None:
        extra["json_file"] = instances_json
    if sem_seg_root is not None:
        extra["sem_seg_root"] = sem_seg_root
    MetadataCatalog.get(name).set(
        image_root=image_root,
        panoptic_root=panoptic_root,
        panoptic_json=panoptic_json,
        evaluator_type="coco_panoptic_seg",
        ignore_label=255,
        label_divisor=1000,
        **extra,
        **metadata,
    )
