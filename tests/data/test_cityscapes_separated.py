"""Cityscapes panoptic with separated ids: a fake two-segment image through loader and mapper."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import CITYSCAPES_CATEGORIES
from PIL import Image

from panoptic_zoo.config import get_cfg
from panoptic_zoo.data import build_dataset_mapper
from panoptic_zoo.data.datasets import separated_metadata
from panoptic_zoo.data.datasets.builtin import _load_cityscapes_panoptic_separated

ROAD, CAR = 7, 26  # Cityscapes dataset ids: road is stuff, car is a thing


def _fake_cityscapes(root):
    name = "aachen_000000_000019"
    image_dir = root / "leftImg8bit" / "train"
    gt_dir = root / "gtFine" / "cityscapes_panoptic_train"
    (image_dir / "aachen").mkdir(parents=True)
    (root / "gtFine" / "train" / "aachen").mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    height, width = 33, 65
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(
        image_dir / "aachen" / f"{name}_leftImg8bit.png"
    )
    Image.fromarray(np.zeros((height, width), np.uint8)).save(
        root / "gtFine" / "train" / "aachen" / f"{name}_gtFine_labelTrainIds.png"
    )
    ids = np.full((height, width), ROAD * 1000, np.int64)
    ids[5:20, 10:40] = CAR * 1000 + 1
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(gt_dir / f"{name}_gtFine_panoptic.png")
    segments = [
        {"id": ROAD * 1000, "category_id": ROAD, "iscrowd": 0, "area": int((ids == 7000).sum())},
        {"id": CAR * 1000 + 1, "category_id": CAR, "iscrowd": 0, "area": 15 * 30},
    ]
    annotation = {"image_id": name, "file_name": f"{name}_gtFine_panoptic.png",
                  "segments_info": segments}  # fmt: skip
    gt_json = root / "gtFine" / "cityscapes_panoptic_train.json"
    gt_json.write_text(
        json.dumps({"annotations": [annotation], "categories": CITYSCAPES_CATEGORIES})
    )
    return str(image_dir), str(gt_dir), str(gt_json)


def test_cityscapes_segments_get_separated_ids_and_train_targets(tmp_path):
    metadata = separated_metadata(CITYSCAPES_CATEGORIES)
    records = _load_cityscapes_panoptic_separated(*_fake_cityscapes(tmp_path), metadata)
    segments = {s["id"]: s for s in records[0]["segments_info"]}
    car_index = [c["id"] for c in CITYSCAPES_CATEGORIES if c["isthing"]].index(CAR)
    road_index = 1 + [c["id"] for c in CITYSCAPES_CATEGORIES if not c["isthing"]].index(ROAD)
    assert (segments[CAR * 1000 + 1]["category_id"], segments[CAR * 1000 + 1]["isthing"]) == (
        car_index, True)  # fmt: skip
    assert (segments[ROAD * 1000]["category_id"], segments[ROAD * 1000]["isthing"]) == (
        road_index, False)  # fmt: skip

    cfg = get_cfg()
    cfg.INPUT.DATASET_MAPPER_NAME = "COCOPanopticDatasetMapper"
    cfg.INPUT.MIN_SIZE_TRAIN = (33,)
    cfg.INPUT.RANDOM_FLIP = "none"
    sample = build_dataset_mapper(cfg, is_train=True)(records[0])
    assert sample["instances"].gt_classes.tolist() == [car_index]
    assert sample["instances"].gt_boxes.tensor.tolist() == [[10.0, 5.0, 40.0, 20.0]]
    sem_seg = sample["sem_seg"]
    assert (sem_seg[5:20, 10:40] == 0).all() and (sem_seg[:5] == road_index).all()


def test_a_wrong_datasets_root_is_named():
    """Not detectron2's "run createPanopticImgs.py": the missing directory and the root."""
    if os.path.isdir(MetadataCatalog.get("cityscapes_fine_panoptic_val_separated").image_root):
        pytest.skip("Cityscapes is installed under DETECTRON2_DATASETS")
    with pytest.raises(FileNotFoundError) as error:
        DatasetCatalog.get("cityscapes_fine_panoptic_val_separated")
    message = str(error.value)
    assert "Cityscapes image directory" in message and "leftImg8bit/val" in message
    assert "the datasets root is" in message and "DETECTRON2_DATASETS is" in message
    assert "createPanopticImgs" not in message
