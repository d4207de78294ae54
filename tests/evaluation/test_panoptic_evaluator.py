"""
PanopticEvaluator through detectron2's inference_on_dataset on the tiny shapes dataset: PQ as
COCOPanopticEvaluator (panopticapi) gives it on the same predictions, a perfect prediction
scores 100 everywhere, and build_evaluators picks evaluators by TEST.PANOPTIC_EVALUATOR.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import COCOPanopticEvaluator, inference_on_dataset
from panoptic_testing import PQ_KEYS

from panoptic_zoo.config import get_cfg
from panoptic_zoo.evaluation import PanopticEvaluator, build_evaluators
from panoptic_zoo.evaluation.panoptic_png import read_segment_ids


class GroundTruthModel:
    """A "model" whose panoptic prediction is the ground truth, optionally degraded."""

    def __init__(self, degrade: bool):
        self.degrade = degrade

    def __call__(self, inputs):
        return [self.predict(record) for record in inputs]

    def predict(self, record):
        ids = read_segment_ids(record["pan_seg_file_name"]).astype(np.int32)
        segments = []
        for k, segment in enumerate(record["segments_info"]):
            if self.degrade and k % 3 == 0:
                ids[ids == segment["id"]] = 0  # missed: VOID
                continue
            category = segment["category_id"]
            if self.degrade and k % 3 == 1 and not segment["isthing"]:
                category = category % 4 + 1  # another stuff class
            segments.append({"id": segment["id"], "category_id": category,
                             "isthing": segment["isthing"], "score": 1.0 - 0.01 * k})  # fmt: skip
        return {"panoptic_seg": (torch.from_numpy(ids), segments)}


def evaluate(dataset_name, evaluator, degrade):
    batches = [[record] for record in DatasetCatalog.get(dataset_name)]
    return inference_on_dataset(GroundTruthModel(degrade), batches, evaluator)


def test_perfect_prediction_scores_100(tiny_shapes):
    results = evaluate(tiny_shapes["val"], PanopticEvaluator(tiny_shapes["val"]), degrade=False)
    panoptic = results["panoptic_seg"]
    assert PQ_KEYS <= set(panoptic)
    for key in [*PQ_KEYS, "mIoU", "AP", "AP50"]:
        assert panoptic[key] == pytest.approx(100.0), key
    per_class = [k for k in panoptic if k.startswith(("PQ-", "IoU-", "AP-"))]
    assert per_class and all(panoptic[k] == pytest.approx(100.0) for k in per_class)


def test_same_pq_as_panopticapi(tiny_shapes, tmp_path):
    ours = evaluate(tiny_shapes["val"], PanopticEvaluator(tiny_shapes["val"]), degrade=True)
    reference = evaluate(
        tiny_shapes["val"], COCOPanopticEvaluator(tiny_shapes["val"], str(tmp_path)), degrade=True
    )
    assert set(reference["panoptic_seg"]) == PQ_KEYS
    for key in PQ_KEYS:
        assert ours["panoptic_seg"][key] == pytest.approx(reference["panoptic_seg"][key], abs=1e-10)
    assert ours["panoptic_seg"]["PQ"] < 100.0
    assert 0.0 < ours["panoptic_seg"]["mIoU"] < 100.0
    assert 0.0 < ours["panoptic_seg"]["AP"] < 100.0


def test_predicting_nothing_scores_0(tiny_shapes):
    class Nothing(GroundTruthModel):
        def predict(self, record):
            ids, _ = super().predict(record)["panoptic_seg"]
            return {"panoptic_seg": (torch.zeros_like(ids), [])}

    batches = [[record] for record in DatasetCatalog.get(tiny_shapes["val"])]
    results = inference_on_dataset(Nothing(False), batches, PanopticEvaluator(tiny_shapes["val"]))
    panoptic = results["panoptic_seg"]
    for key in [*PQ_KEYS, "mIoU", "AP", "AP50"]:
        assert panoptic[key] == 0.0, key


def test_segments_without_score_give_no_ap(tiny_shapes):
    class Unscored(GroundTruthModel):
        def predict(self, record):
            output = super().predict(record)
            for segment in output["panoptic_seg"][1]:
                del segment["score"]
            return output

    batches = [[record] for record in DatasetCatalog.get(tiny_shapes["val"])]
    results = inference_on_dataset(
        Unscored(degrade=False), batches, PanopticEvaluator(tiny_shapes["val"])
    )
    assert results["panoptic_seg"]["PQ"] == pytest.approx(100.0)
    assert not any(k.startswith("AP") for k in results["panoptic_seg"])


def test_build_evaluators_follows_the_config(tiny_shapes, tmp_path):
    cfg = get_cfg()
    assert cfg.TEST.PANOPTIC_EVALUATOR == "panoptic_zoo"
    kinds = [type(e) for e in build_evaluators(cfg, tiny_shapes["val"], str(tmp_path))._evaluators]
    assert PanopticEvaluator in kinds and COCOPanopticEvaluator not in kinds

    cfg.TEST.PANOPTIC_EVALUATOR = "panopticapi"
    kinds = [type(e) for e in build_evaluators(cfg, tiny_shapes["val"], str(tmp_path))._evaluators]
    assert COCOPanopticEvaluator in kinds and PanopticEvaluator not in kinds

    cfg.TEST.PANOPTIC_EVALUATOR = "pq"
    with pytest.raises(ValueError, match="TEST.PANOPTIC_EVALUATOR is 'pq'"):
        build_evaluators(cfg, tiny_shapes["val"], str(tmp_path))
