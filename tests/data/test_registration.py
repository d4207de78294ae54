"""Dataset registration: names, metadata in separated ids, and detectron2's own views of shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog
from detectron2.data.datasets.builtin_meta import CITYSCAPES_CATEGORIES
from panoptic_testing import TINY_SHAPES_PREFIX

from panoptic_zoo.config import get_cfg
from panoptic_zoo.data.datasets import separated_metadata
from panoptic_zoo.data.datasets.shapes import SHAPES_CATEGORIES


def test_builtin_names_are_registered():
    names = set(DatasetCatalog.list())
    for split in ("train", "val"):
        assert {f"shapes_{split}_panoptic", f"shapes_{split}_panoptic_separated",
                f"shapes_{split}_panoptic_stuffonly", f"coco_2017_{split}_panoptic_separated",
                f"coco_2017_{split}_panoptic_png_separated",
                f"cityscapes_fine_panoptic_{split}_separated"} <= names  # fmt: skip


def test_separated_metadata_by_hand():
    categories = [
        {"id": 9, "name": "b", "isthing": 1, "color": [1, 2, 3]},
        {"id": 3, "name": "a", "isthing": 1, "color": [4, 5, 6]},
        {"id": 20, "name": "s2", "isthing": 0, "color": [7, 8, 9]},
        {"id": 12, "name": "s1", "isthing": 0, "color": [0, 0, 1]},
    ]
    meta = separated_metadata(categories)
    assert meta["thing_classes"] == ["a", "b"]
    assert meta["thing_dataset_id_to_contiguous_id"] == {3: 0, 9: 1}
    assert meta["stuff_classes"] == ["things", "s1", "s2"]
    assert meta["stuff_dataset_id_to_contiguous_id"] == {0: 0, 12: 1, 20: 2}
    assert meta["thing_colors"] == [[4, 5, 6], [1, 2, 3]]


def test_cityscapes_metadata_has_8_things_and_11_stuff():
    meta = MetadataCatalog.get("cityscapes_fine_panoptic_train_separated")
    assert len(meta.thing_classes) == 8 and len(meta.stuff_classes) == 12
    assert meta.thing_dataset_id_to_contiguous_id == separated_metadata(CITYSCAPES_CATEGORIES)[
        "thing_dataset_id_to_contiguous_id"]  # fmt: skip


def test_shapes_records_agree_with_their_json(tiny_shapes):
    meta = MetadataCatalog.get(tiny_shapes["train"])
    assert meta.evaluator_type == "coco_panoptic_seg"
    assert meta.thing_classes == [c["name"] for c in SHAPES_CATEGORIES if c["isthing"]]
    content = json.loads(open(meta.panoptic_json).read())
    by_image = {a["image_id"]: a for a in content["annotations"]}
    dataset_id = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
    stuff_id = {v: k for k, v in meta.stuff_dataset_id_to_contiguous_id.items()}
    records = DatasetCatalog.get(tiny_shapes["train"])
    assert len(records) == len(content["annotations"]) == 6
    for record in records:
        raw = {s["id"]: s for s in by_image[record["image_id"]]["segments_info"]}
        for segment in record["segments_info"]:
            back = (dataset_id if segment["isthing"] else stuff_id)[segment["category_id"]]
            assert back == raw[segment["id"]]["category_id"]
        assert record["sem_seg_file_name"].startswith(meta.sem_seg_root)


@pytest.mark.parametrize("split", ["train", "val"])
def test_detectron2_separated_view_maps_with_its_own_mapper(tiny_shapes, split):
    """detectron2's register_coco_panoptic_separated + DatasetMapper serve the files unchanged."""
    name = f"{TINY_SHAPES_PREFIX}_{split}_panoptic_separated"
    records = DatasetCatalog.get(name)
    cfg = get_cfg()
    cfg.INPUT.MASK_FORMAT = "bitmask"  # the instances JSON stores RLE masks
    cfg.INPUT.MIN_SIZE_TRAIN = (80,)
    sample = DatasetMapper(cfg, is_train=True)(records[0])
    standard = {r["file_name"]: r for r in DatasetCatalog.get(f"{TINY_SHAPES_PREFIX}_{split}_panoptic")}
    n_things = sum(s["isthing"] and not s["iscrowd"]
                   for s in standard[records[0]["file_name"]]["segments_info"])  # fmt: skip
    assert len(sample["instances"]) == n_things
    assert set(np.unique(sample["sem_seg"].numpy())) <= {0, 1, 2, 3, 4, 255}
