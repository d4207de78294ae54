"""
Fuzzing the COCO path's mapper (CheckedDatasetMapper, detectron2's DatasetMapper with checks;
Panoptic FPN's COCO configs use it) with instance annotations: overlapping boxes, boxes partly or
entirely out of the image, empty, inverted, NaN or infinite boxes, wrong types and lengths,
classes outside the model, malformed or outside polygons, RLE masks of the wrong size, crowd
flags, and semantic PNGs in color. A record whose annotations are all valid must map to exactly
one instance per non-crowd annotation, with its class (nothing dropped silently); any invalid
annotation must raise a clear error naming the image.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import MetadataCatalog
from detectron2.structures import BoxMode
from fuzz_testing import (
    encode,
    fuzz_settings,
    fuzz_tally,  # noqa: F401  (fixture)
)
from hypothesis import given
from hypothesis import strategies as st
from panoptic_testing import CONFIGS
from PIL import Image
from pycocotools import mask as mask_util

from panoptic_zoo.config import get_cfg
from panoptic_zoo.data import CheckedDatasetMapper, build_dataset_mapper

NUM_CLASSES = 80


@pytest.fixture(scope="module")
def mappers() -> dict:
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / "coco" / "panoptic_fpn_R_50_1x.yaml"))
    assert cfg.INPUT.DATASET_MAPPER_NAME == "CheckedDatasetMapper" and cfg.MODEL.MASK_ON
    assert len(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).thing_classes) == NUM_CLASSES
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (24, 48), 64
    return {
        "plain": CheckedDatasetMapper(cfg, True, augmentations=[]),
        "train": build_dataset_mapper(cfg, is_train=True),
    }


def box_strategy(width: int, height: int):
    """(bbox in XYWH_ABS, valid?) over sizes and positions in and around the image."""
    # Half pixels, as in COCO: a valid box is at least that large.
    size = max(width, height)
    coordinate = st.integers(-4 * size, 6 * size).map(lambda half_pixels: half_pixels / 2)

    def valid(box):
        x, y, w, h = box
        return w > 0 and h > 0 and x + w > 0 and y + h > 0 and x < width and y < height

    plausible = st.tuples(coordinate, coordinate, coordinate, coordinate).map(
        lambda b: (list(b), valid(b))
    )
    broken = st.sampled_from([
        [math.nan, 1, 2, 2], [1, 1, math.inf, 2], [1, 1, 2], [1, 1, 2, 2, 0.9], "1 1 2 2", None,
        ["1", 1, 2, 2], [True, 1, 2, 2],
    ]).map(lambda b: (b, False))  # fmt: skip
    return st.one_of(plausible, plausible, broken)


@st.composite
def annotations(draw, width: int, height: int):
    """An annotation and whether it is valid for a model with masks and NUM_CLASSES classes."""
    box, valid = draw(box_strategy(width, height))
    category = draw(st.one_of(st.integers(0, NUM_CLASSES - 1), st.integers(0, NUM_CLASSES - 1),
                              st.sampled_from([-1, NUM_CLASSES, 1.0, "3", None])))  # fmt: skip
    valid &= isinstance(category, int) and 0 <= category < NUM_CLASSES
    segmentation_kind = draw(st.sampled_from(
        ["box_polygon", "box_polygon", "rle", "short", "odd", "empty", "nan", "outside",
         "rle_other_size", "missing"]))  # fmt: skip
    annotation = {"bbox": box, "bbox_mode": BoxMode.XYWH_ABS, "category_id": category}
    if valid and segmentation_kind in ("box_polygon", "rle"):
        x, y, w, h = box
        polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
        if segmentation_kind == "box_polygon":
            annotation["segmentation"] = [polygon]
        else:
            annotation["segmentation"] = mask_util.merge(
                mask_util.frPyObjects([polygon], height, width)
            )
    else:
        valid &= segmentation_kind in ("box_polygon", "rle")
        annotation["segmentation"] = {
            "box_polygon": [[1, 1, 3, 1, 3, 3]], "rle": {"size": [height, width], "counts": b""},
            "short": [[1, 1, 2, 2]], "odd": [[1, 1, 2, 2, 3, 3, 4]], "empty": [],
            "nan": [[1, 1, math.nan, 2, 3, 3]], "outside": [[-9, -9, -5, -9, -5, -5]],
            "rle_other_size": {"size": [height + 1, width], "counts": b""}, "missing": None,
        }[segmentation_kind]  # fmt: skip
        if segmentation_kind == "missing":
            del annotation["segmentation"]
    if draw(st.integers(0, 9)) == 0:  # crowd annotations are dropped by detectron2: not checked
        annotation["iscrowd"] = 1
        return annotation, True
    return annotation, valid


@st.composite
def records(draw):
    width, height = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    drawn = draw(st.lists(annotations(width, height), max_size=4))
    return width, height, [a for a, _ in drawn], all(v for _, v in drawn)


@fuzz_settings(default_examples=150)
@given(record=records(), semantic_mode=st.sampled_from(["L", "L", "L", "P", "RGB"]))
def test_checked_mapper_on_fuzzed_annotations(mappers, fuzz_tally, record, semantic_mode):
    width, height, annotations_, valid = record
    valid &= semantic_mode != "RGB"  # a color semantic PNG would be turned into wrong labels
    with tempfile.TemporaryDirectory() as directory:
        image_file, sem_seg_file = Path(directory) / "image.jpg", Path(directory) / "sem.png"
        image_file.write_bytes(encode(Image.new("RGB", (width, height), (40, 90, 10)), "JPEG"))
        labels = (np.arange(width * height) % 5).reshape(height, width).astype(np.uint8)
        sem_seg_file.write_bytes(encode(Image.fromarray(labels).convert(semantic_mode), "PNG"))
        dataset_dict = {
            "file_name": str(image_file), "height": height, "width": width, "image_id": 1,
            "sem_seg_file_name": str(sem_seg_file), "annotations": annotations_,
        }  # fmt: skip

        def map_and_check():
            out = mappers["plain"](dataset_dict)
            kept = [a for a in annotations_ if not a.get("iscrowd", 0)]
            assert out["instances"].gt_classes.tolist() == [a["category_id"] for a in kept]
            assert np.array_equal(out["sem_seg"].numpy(), labels)
            mappers["train"](dataset_dict)

        fuzz_tally.expect(
            "ok" if valid else "error", map_and_check, files=[image_file, sem_seg_file]
        )
