"""
Bad dataset input gives an error naming the file and the problem, never a silent wrong label:
missing directories and files, corrupt images and PNGs, malformed panoptic JSON, PNGs that
disagree with their segments_info, and images whose size disagrees with the annotation. The
positive control checks that an untouched dataset maps to targets that agree with its PNGs.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import SizeMismatchError
from PIL import Image

from panoptic_zoo.config import get_cfg
from panoptic_zoo.data import COCOPanopticDatasetMapper, build_dataset_mapper
from panoptic_zoo.data.datasets import (
    AnnotationError,
    load_panoptic_json,
    register_panoptic_dataset,
)
from panoptic_zoo.data.datasets.panoptic import separated_metadata
from panoptic_zoo.data.datasets.shapes import SHAPES_CATEGORIES, ShapesSpec, generate_shapes_dataset

# Every image has a crowd segment and void pixels, so the positive control sees all kinds of pixel.
SPEC = ShapesSpec(
    seed=5, splits=(("train", 3),), min_size=64, max_size=96, crowd_prob=1.0, void_prob=1.0
)
METADATA = separated_metadata(SHAPES_CATEGORIES)
IMAGE = 1  # index of the record (and image) the corruptions target
IMAGE_NAME, PNG_NAME = "000002.jpg", "000002.png"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad_input") / "shapes"
    generate_shapes_dataset(root, SPEC)
    return root


@pytest.fixture
def root(pristine, tmp_path) -> Path:
    """A private copy of the dataset that the test may corrupt."""
    copy = tmp_path / "shapes"
    shutil.copytree(pristine, copy)
    return copy


@pytest.fixture(scope="module")
def train_mapper() -> COCOPanopticDatasetMapper:
    cfg = get_cfg()
    cfg.INPUT.DATASET_MAPPER_NAME = "COCOPanopticDatasetMapper"
    cfg.INPUT.MIN_SIZE_TRAIN = (48,)
    cfg.INPUT.MAX_SIZE_TRAIN = 96
    mapper = build_dataset_mapper(cfg, is_train=True)
    assert isinstance(mapper, COCOPanopticDatasetMapper)
    return mapper


def paths(root: Path) -> dict[str, str]:
    return {
        "json_file": str(root / "panoptic_train.json"),
        "image_root": str(root / "images" / "train"),
        "panoptic_root": str(root / "panoptic_train"),
        "sem_seg_root": str(root / "panoptic_stuff_train"),
    }


def load(root: Path) -> list[dict]:
    return load_panoptic_json(**paths(root), metadata=METADATA)


def edit_json(root: Path, edit) -> str:
    json_file = root / "panoptic_train.json"
    content = json.loads(json_file.read_text())
    edit(content)
    json_file.write_text(json.dumps(content))
    return str(json_file)


def read_ids(png: Path) -> np.ndarray:
    rgb = np.asarray(Image.open(png).convert("RGB"), dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def write_ids(png: Path, ids: np.ndarray) -> None:
    rgb = np.stack([(ids >> shift) & 0xFF for shift in (0, 8, 16)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(png)


def unused_id(ids) -> int:
    return next(i for i in range(0x030201, 1 << 24) if i not in set(ids))


def assert_message(error: pytest.ExceptionInfo, *parts) -> None:
    message = str(error.value)
    for part in parts:
        assert str(part) in message, f"{part!r} not in error message: {message}"


# ----------------------------------------------------------------------------------------------
# Missing files and directories


MISSING = {
    "image_root": ("image_root", "image directory"),
    "panoptic_root": ("panoptic_root", "panoptic PNG directory"),
    "json": ("json_file", "panoptic annotation file"),
    "sem_seg_root": ("sem_seg_root", "semantic PNG directory"),
}


def remove(path: str) -> None:
    if Path(path).is_dir():
        shutil.rmtree(path)
    else:
        Path(path).unlink()


@pytest.mark.parametrize("case", sorted(MISSING))
def test_missing_path_through_loader(root, case):
    key, what = MISSING[case]
    remove(paths(root)[key])
    with pytest.raises(FileNotFoundError) as error:
        load(root)
    assert_message(error, what, paths(root)[key], "does not exist")


@pytest.fixture
def dataset_name():
    name = f"bad_input_{uuid.uuid4().hex[:8]}"
    yield name
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


@pytest.mark.parametrize("case", sorted(MISSING))
def test_missing_path_through_dataset_catalog(root, dataset_name, case):
    key, what = MISSING[case]
    p = paths(root)
    register_panoptic_dataset(
        dataset_name, METADATA, p["image_root"], p["panoptic_root"], p["json_file"],
        instances_json=str(root / "instances_train.json"), sem_seg_root=p["sem_seg_root"],
    )  # fmt: skip
    assert len(DatasetCatalog.get(dataset_name)) == 3  # registered correctly before the damage
    remove(p[key])
    with pytest.raises(FileNotFoundError) as error:
        DatasetCatalog.get(dataset_name)
    assert_message(error, what, p[key], "does not exist")


# ----------------------------------------------------------------------------------------------
# Malformed panoptic JSON


def test_json_that_is_not_json(root):
    json_file = root / "panoptic_train.json"
    json_file.write_text(json_file.read_text()[:200])
    with pytest.raises(AnnotationError) as error:
        load(root)
    assert_message(error, json_file, "is not valid JSON")


def segment(content: dict, index: int = 2) -> dict:
    return content["annotations"][IMAGE]["segments_info"][index]


def thing_index(content: dict) -> int:
    thing_ids = METADATA["thing_dataset_id_to_contiguous_id"]
    segments = content["annotations"][IMAGE]["segments_info"]
    return next(i for i, s in enumerate(segments) if s["category_id"] in thing_ids)


def test_json_without_annotations(root):
    json_file = edit_json(root, lambda c: c.pop("annotations"))
    with pytest.raises(AnnotationError) as error:
        load(root)
    assert_message(error, json_file, "no 'annotations' field")


def test_json_without_images(root):
    json_file = edit_json(root, lambda c: c.pop("images"))
    with pytest.raises(AnnotationError) as error:
        load(root)
    assert_message(error, json_file, "no 'images' field")


def test_json_with_empty_annotations(root):
    json_file = edit_json(root, lambda c: c.__setitem__("annotations", []))
    with pytest.raises(AnnotationError) as error:
        load(root)
    assert_message(error, json_file, "has no annotations")


@pytest.mark.parametrize("key", ["annotations", "images"])
def test_json_with_top_level_field_of_wrong_type(root, key):
    json_file = edit_json(root, lambda c: c.__setitem__(key, {"1": c[key][0]}))
    with pytest.raises(AnnotationError) as error:
        load(root)
    assert_message(error, json_file, f"'{key}' of type dict, expected list")


def test_segments_info_of_wrong_type(root):
    json_file = edit_json(
        root, lambda c: c["annotations"][IMAGE].__setitem__("segments_info", None)
    )
    with pytest.raises(AnnotationError) as error:
        load(root)
    assert_message(error, json_file, f"annotations[{IMAGE}]", "'segments_info' of type NoneType")


@pytest.mark.parametrize("key", ["id", "category_id"])
def test_segment_without_field(root, key):
    json_file = edit_json(root, lambda c: segment(c).pop(key))
    with pytest.raises(AnnotationError) as error:
        load(root)
    assert_message(error, json_file, PNG_NAME, "segments_info[2]", f"no '{key}' field")


@pytest.mark.parametrize("key", ["image_id", "file_name"])
def test_annotation_without_field(root, key):
    json_file = edit_json(root, lambda c: c["annotations"][IMAGE].pop(key))
    with pytest.raises(AnnotationError) as error:
        load(root)
    assert_message(error, json_file, f"annotations[{IMAGE}]", f"no '{key}' field")


@pytest.mark.parametrize("key", ["file_name", "height", "width"])
def test_image_without_field(root, key):
    json_file = edit_json(root, lambda c: c["images"][IMAGE].pop(key))
    with pytest.raises(AnnotationError) as error:
        load(root)
    assert_message(error, json_file, f"image {IMAGE + 1}", f"no '{key}' field")


@pytest.mark.parametrize("bad", ["as_string", 0, -3, True, 1.5])
def test_segment_id_of_wrong_type_or_value(root, bad):
    def edit(content):
        seg = segment(content)
        seg["id"] = str(seg["id"]) if bad == "as_string" else bad

    json_file = edit_json(root, edit)
    with pytest.raises(AnnotationError) as error:
        load(root)
    assert_message(error, json_file, PNG_NAME, "segments_info[2] has id", "positive integers")


def test_duplicate_segment_id(root):
    ids = []

    def edit(content):
        ids.append(segment(content, 0)["id"])
        segment(content, 2)["id"] = ids[0]

    json_file = edit_json(root, edit)
    with pytest.raises(AnnotationError) as error:
        load(root)
    assert_message(error, json_file, PNG_NAME, f"segments_info[2] has id {ids[0]}", "unique")


@pytest.mark.parametrize("category_id", [3, 0, 999, "1"])
def test_unknown_category_id(root, category_id):
    json_file = edit_json(root, lambda c: segment(c).__setitem__("category_id", category_id))
    with pytest.raises(AnnotationError) as error:
        load(root)
    assert_message(
        error, json_file, PNG_NAME, f"category_id {category_id!r}", "not a category of this dataset"
    )


def test_annotation_of_unknown_image_id(root):
    json_file = edit_json(root, lambda c: c["annotations"][IMAGE].__setitem__("image_id", 4242))
    with pytest.raises(AnnotationError) as error:
        load(root)
    assert_message(error, json_file, PNG_NAME, "image_id 4242", "not in 'images'")


def test_two_annotations_of_one_image(root):
    json_file = edit_json(root, lambda c: c["annotations"][IMAGE].__setitem__("image_id", 1))
    with pytest.raises(AnnotationError) as error:
        load(root)
    assert_message(error, json_file, PNG_NAME, "second annotation of image_id 1")


def test_duplicate_image_id(root):
    json_file = edit_json(root, lambda c: c["images"][IMAGE].__setitem__("id", 1))
    with pytest.raises(AnnotationError) as error:
        load(root)
    assert_message(error, json_file, f"images[{IMAGE}]", "repeats image id 1")


# ----------------------------------------------------------------------------------------------
# Files the mapper reads


def map_record(root: Path, mapper) -> dict:
    return mapper(load(root)[IMAGE])


def test_missing_image_file(root, train_mapper):
    image = root / "images" / "train" / IMAGE_NAME
    image.unlink()
    with pytest.raises(FileNotFoundError) as error:
        map_record(root, train_mapper)
    assert_message(error, image, "does not exist")


def test_missing_panoptic_png(root, train_mapper):
    png = root / "panoptic_train" / PNG_NAME
    png.unlink()
    with pytest.raises(FileNotFoundError) as error:
        map_record(root, train_mapper)
    assert_message(error, png, "does not exist")


@pytest.mark.parametrize("keep", [100, "half"])
def test_truncated_jpeg(root, train_mapper, keep):
    image = root / "images" / "train" / IMAGE_NAME
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2 if keep == "half" else keep])
    with pytest.raises(AnnotationError) as error:
        map_record(root, train_mapper)
    assert_message(error, image, "is not a readable image")


def test_random_bytes_as_png(root, train_mapper):
    png = root / "panoptic_train" / PNG_NAME
    png.write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(AnnotationError) as error:
        map_record(root, train_mapper)
    assert_message(error, png, "is not a readable image")


def test_truncated_png(root, train_mapper):
    png = root / "panoptic_train" / PNG_NAME
    data = png.read_bytes()
    png.write_bytes(data[: len(data) // 2])
    with pytest.raises(AnnotationError) as error:
        map_record(root, train_mapper)
    assert_message(error, png, "is not a readable image")


def test_png_id_missing_from_segments_info(root, train_mapper):
    """A pixel label nobody annotated would silently be trained as void."""
    png = root / "panoptic_train" / PNG_NAME
    ids = read_ids(png)
    stray = unused_id(np.unique(ids))
    ids[:3, :3] = stray
    write_ids(png, ids)
    with pytest.raises(AnnotationError) as error:
        map_record(root, train_mapper)
    assert_message(error, png, f"segment ids [{stray}]", "not in its segments_info")


def test_segment_dropped_from_json(root, train_mapper):
    dropped = []
    edit_json(root, lambda c: dropped.append(c["annotations"][IMAGE]["segments_info"].pop(0)["id"]))
    png = root / "panoptic_train" / PNG_NAME
    with pytest.raises(AnnotationError) as error:
        map_record(root, train_mapper)
    assert_message(error, png, f"segment ids [{dropped[0]}]", "not in its segments_info")


def test_segments_info_id_absent_from_png(root, train_mapper):
    added = []

    def edit(content):
        segments = content["annotations"][IMAGE]["segments_info"]
        added.append(unused_id(s["id"] for s in segments))
        segments.append({**segments[thing_index(content)], "id": added[0]})

    edit_json(root, edit)
    png = root / "panoptic_train" / PNG_NAME
    with pytest.raises(AnnotationError) as error:
        map_record(root, train_mapper)
    assert_message(error, png, f"segments_info lists ids [{added[0]}]", "do not appear in the PNG")


def test_lossy_png_error_stays_short(root, train_mapper):
    """A JPEG saved as the panoptic PNG has thousands of stray ids; the message lists a few."""
    png = root / "panoptic_train" / PNG_NAME
    Image.open(png).convert("RGB").save(png, format="JPEG", quality=50)
    with pytest.raises(AnnotationError) as error:
        map_record(root, train_mapper)
    assert_message(error, png, "more)", "not in its segments_info")
    assert len(str(error.value)) < 1000


def test_panoptic_png_of_other_size(root, train_mapper):
    png = root / "panoptic_train" / PNG_NAME
    with Image.open(png) as im:
        width, height = im.size
    Image.open(png).resize((width - 5, height + 3), Image.NEAREST).save(png)
    image = root / "images" / "train" / IMAGE_NAME
    with pytest.raises(AnnotationError) as error:
        map_record(root, train_mapper)
    assert_message(error, png, f"{width - 5}x{height + 3}", image, f"{width}x{height}")


def test_image_file_of_other_size(root, train_mapper):
    image = root / "images" / "train" / IMAGE_NAME
    with Image.open(image) as im:
        width, height = im.size
    Image.open(image).resize((width + 4, height)).save(image, quality=95)
    with pytest.raises(SizeMismatchError) as error:
        map_record(root, train_mapper)
    assert_message(error, image, (width + 4, height), (width, height))


def test_annotated_size_differs_from_image(root, train_mapper):
    image = root / "images" / "train" / IMAGE_NAME
    with Image.open(image) as im:
        width, height = im.size
    edit_json(root, lambda c: c["images"][IMAGE].__setitem__("height", height + 1))
    with pytest.raises(SizeMismatchError) as error:
        map_record(root, train_mapper)
    assert_message(error, image, (width, height), (width, height + 1))


# ----------------------------------------------------------------------------------------------
# Positive control


def check_targets(out: dict, num_things: int, num_stuff: int) -> None:
    instances, sem_seg = out["instances"], out["sem_seg"]
    assert out["image"].shape[1:] == sem_seg.shape == instances.image_size
    assert set(torch.unique(sem_seg).tolist()) <= {*range(num_stuff + 1), 255}
    assert ((instances.gt_classes >= 0) & (instances.gt_classes < num_things)).all()
    for mask in instances.gt_masks.tensor:
        assert mask.any() and (sem_seg[mask] == 0).all()


def test_untouched_dataset_maps_consistently_with_png(pristine, train_mapper):
    """
    Without augmentation, the targets equal the PNG exactly: every non-crowd thing is an
    instance with its contiguous class and mask, every thing pixel (crowd included) has sem_seg 0,
    stuff pixels carry their contiguous stuff id, void pixels 255 -- which is also what the
    generator's semantic PNGs (prepare_panoptic_fpn.py's convention) say.
    """
    content = json.loads((pristine / "panoptic_train.json").read_text())
    thing_ids = METADATA["thing_dataset_id_to_contiguous_id"]
    stuff_ids = METADATA["stuff_dataset_id_to_contiguous_id"]
    num_things, num_stuff = len(METADATA["thing_classes"]), len(METADATA["stuff_classes"]) - 1
    plain = COCOPanopticDatasetMapper(True, augmentations=[], image_format="BGR", ignore_label=255)
    records = load(pristine)
    assert len(records) == len(content["annotations"]) == 3
    seen_crowd = seen_void = False
    for record, ann in zip(records, content["annotations"]):
        out = plain(record)
        check_targets(out, num_things, num_stuff)
        ids = read_ids(pristine / "panoptic_train" / ann["file_name"])
        sem_seg, instances = out["sem_seg"].numpy(), out["instances"]
        assert sem_seg.shape == ids.shape == (record["height"], record["width"])
        expected_classes, expected_masks = [], []
        for seg in ann["segments_info"]:
            pixels = ids == seg["id"]
            if seg["category_id"] in thing_ids:
                assert (sem_seg[pixels] == 0).all()
                if seg["iscrowd"]:
                    seen_crowd = True
                else:
                    expected_classes.append(thing_ids[seg["category_id"]])
                    expected_masks.append(pixels)
            else:
                assert (sem_seg[pixels] == stuff_ids[seg["category_id"]]).all()
                assert stuff_ids[seg["category_id"]] >= 1
        void = ids == 0
        seen_void |= bool(void.any())
        assert (sem_seg[void] == 255).all()
        assert instances.gt_classes.tolist() == expected_classes
        assert np.array_equal(instances.gt_masks.tensor.numpy(), np.stack(expected_masks))
        semantic_png = np.asarray(Image.open(pristine / "panoptic_stuff_train" / ann["file_name"]))
        assert np.array_equal(sem_seg, semantic_png)
    assert seen_crowd and seen_void  # the control covered crowd and void pixels


def test_untouched_dataset_through_config_mapper(pristine, train_mapper):
    """The config-built mapper (resize + flip) keeps image, instances and sem_seg aligned."""
    num_things, num_stuff = len(METADATA["thing_classes"]), len(METADATA["stuff_classes"]) - 1
    for record in load(pristine):
        out = train_mapper(record)
        assert min(out["image"].shape[1:]) == 48
        assert len(out["instances"]) > 0
        check_targets(out, num_things, num_stuff)
        assert "pan_seg_file_name" not in out and "segments_info" not in out
