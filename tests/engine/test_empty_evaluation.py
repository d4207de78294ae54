"""
Evaluation of every method when there is nothing to find: each method's own post-processing is
set so that it predicts no segment and no instance, and the evaluators of ``Trainer.test`` (PQ,
box/mask AP where the method has masks, mIoU) run on the tiny validation split where some or all
images have no segment at all (void panoptic PNG, empty segments_info, no instance, void
semantic PNG). Nothing may crash, and the numbers must be what empty predictions score.
"""

from __future__ import annotations

import json
import math
import shutil
import uuid
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from panoptic_testing import shrunk_shapes_cfg
from PIL import Image

from panoptic_zoo.data.datasets import register_panoptic_dataset, separated_metadata
from panoptic_zoo.data.datasets.shapes import SHAPES_CATEGORIES
from panoptic_zoo.engine import Trainer

NOTHING = 10**9  # a score or area threshold that nothing reaches
PQ_FIGURES = ("PQ", "SQ", "RQ")

# detectron2's evaluators on nothing: "No predictions" (through a deprecated logger call) and
# 0/0 class statistics. Both are the expected path here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The 'warn' method is deprecated:DeprecationWarning",
    "ignore:invalid value encountered:RuntimeWarning",
)

# Per method: its shapes config and the options that make its post-processing predict nothing.
PREDICT_NOTHING = {
    "panoptic_fpn": ("panoptic_fpn_R_18.yaml", {
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 1.0,
        "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH": 1.0,
        "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT": NOTHING,
    }),
    "upsnet": ("upsnet_R_18.yaml", {
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 1.0,
        "MODEL.UPSNET.INFERENCE.SCORE_THRESH": 1.0,
        "MODEL.UPSNET.INFERENCE.STUFF_AREA_LIMIT": NOTHING,
    }),
    "panoptic_deeplab": ("panoptic_deeplab_R_18.yaml", {
        "MODEL.PANOPTIC_DEEPLAB.CENTER_THRESHOLD": float(NOTHING),
        "MODEL.PANOPTIC_DEEPLAB.STUFF_AREA": NOTHING,
    }),
    "panoptic_fcn": ("panoptic_fcn_R_18.yaml", {
        "MODEL.PANOPTIC_FCN.INFERENCE.THING_SCORE_THRESH": 1.0,
        "MODEL.PANOPTIC_FCN.INFERENCE.STUFF_SCORE_THRESH": 1.0,
        "MODEL.PANOPTIC_FCN.INFERENCE.INSTANCE_SCORE_THRESH": 1.0,
        "MODEL.PANOPTIC_FCN.INFERENCE.STUFF_AREA_LIMIT": NOTHING,
    }),
}  # fmt: skip


def without_segments(tiny_shapes, directory: Path, blank: set[int]) -> dict:
    """A copy of the tiny validation split with no segment in the images of ids ``blank``."""
    root = directory / "shapes"
    shutil.copytree(tiny_shapes["root"], root)
    panoptic = json.loads((root / "panoptic_val.json").read_text())
    for ann in panoptic["annotations"]:
        if ann["image_id"] in blank:
            ann["segments_info"] = []
            png = root / "panoptic_val" / ann["file_name"]
            size = Image.open(png).size
            Image.new("RGB", size).save(png)  # id 0 everywhere: void
            Image.new("L", size, 255).save(root / "panoptic_stuff_val" / ann["file_name"])
    (root / "panoptic_val.json").write_text(json.dumps(panoptic))
    instances = json.loads((root / "instances_val.json").read_text())
    instances["annotations"] = [a for a in instances["annotations"] if a["image_id"] not in blank]
    (root / "instances_val.json").write_text(json.dumps(instances))

    name = f"shapes_no_segments_{uuid.uuid4().hex[:8]}"
    register_panoptic_dataset(
        name, separated_metadata(SHAPES_CATEGORIES), str(root / "images" / "val"),
        str(root / "panoptic_val"), str(root / "panoptic_val.json"),
        instances_json=str(root / "instances_val.json"),
        sem_seg_root=str(root / "panoptic_stuff_val"),
    )  # fmt: skip
    image_ids = {image["id"] for image in panoptic["images"]}
    return {"train": tiny_shapes["train"], "val": name, "images": len(image_ids),
            "all_empty": image_ids <= blank}  # fmt: skip


@pytest.fixture
def datasets(tiny_shapes, tmp_path, request):
    made = without_segments(tiny_shapes, tmp_path, blank=request.param)
    yield made
    DatasetCatalog.remove(made["val"])
    MetadataCatalog.remove(made["val"])


def predict_nothing_and_evaluate(method: str, datasets: dict, output_dir: Path) -> dict:
    config_name, options = PREDICT_NOTHING[method]
    cfg = shrunk_shapes_cfg(config_name, datasets, output_dir)
    cfg.merge_from_list([item for pair in options.items() for item in pair])
    torch.manual_seed(0)
    model = Trainer.build_model(cfg).eval()
    predictions = []
    model.register_forward_hook(lambda module, inputs, outputs: predictions.extend(outputs))
    results = Trainer.test(cfg, model)
    assert len(predictions) == datasets["images"]
    for prediction in predictions:  # the method's post-processing really predicted nothing
        segment_ids, segments_info = prediction["panoptic_seg"]
        assert segments_info == [] and not segment_ids.any()
        assert len(prediction.get("instances", [])) == 0
    tasks = {"panoptic_seg", "sem_seg"} | ({"bbox", "segm"} if cfg.MODEL.MASK_ON else set())
    assert set(results) == tasks
    return results


@pytest.mark.parametrize("method", sorted(PREDICT_NOTHING))
@pytest.mark.parametrize("datasets", [{2, 3}], indirect=True, ids=["images_2_3_without_segments"])
def test_empty_predictions_on_images_without_segments(method, datasets, tmp_path):
    results = predict_nothing_and_evaluate(method, datasets, tmp_path)
    # Image 1 has segments, all missed: every PQ figure is 0; detection AP without any
    # detection is undefined (detectron2 reports NaN); the semantic head still predicts.
    assert all(v == 0.0 for k, v in results["panoptic_seg"].items() if k[:2] in PQ_FIGURES)
    for task in ("bbox", "segm"):
        assert all(math.isnan(v) for v in results.get(task, {}).values())
    assert 0.0 <= results["sem_seg"]["mIoU"] <= 100.0


@pytest.mark.parametrize("datasets", [{1, 2, 3}], indirect=True, ids=["no_segment_anywhere"])
def test_empty_predictions_on_a_dataset_without_any_segment(datasets, tmp_path):
    """With nothing to find and nothing found, PQ and mIoU are undefined (NaN), not an error."""
    results = predict_nothing_and_evaluate("panoptic_fpn", datasets, tmp_path)
    pq = results["panoptic_seg"]
    assert all(math.isnan(v) or v == 0.0 for k, v in pq.items() if k[:2] in PQ_FIGURES)
    assert math.isnan(results["sem_seg"]["mIoU"])
