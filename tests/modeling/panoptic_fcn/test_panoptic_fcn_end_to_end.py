"""Panoptic FCN through the real Trainer, mapper and evaluators on the tiny shapes dataset."""

from __future__ import annotations

import json
import math

from panoptic_testing import shrunk_shapes_cfg

from panoptic_zoo.engine import Trainer
from panoptic_zoo.engine.trainer import EVAL_RESULTS_FILE

PQ_KEYS = {"PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"}


def test_train_and_evaluate(tiny_shapes, tmp_path):
    cfg = shrunk_shapes_cfg("panoptic_fcn_R_18.yaml", tiny_shapes, tmp_path, max_iter=3)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()

    logged = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    losses = [row["total_loss"] for row in logged if "total_loss" in row]
    assert losses and all(math.isfinite(loss) for loss in losses)
    results = json.loads((tmp_path / EVAL_RESULTS_FILE).read_text())
    assert set(results) == {"panoptic_seg", "bbox", "segm", "sem_seg"}
    assert PQ_KEYS <= set(results["panoptic_seg"])
    assert all(0.0 <= results["panoptic_seg"][k] <= 100.0 for k in PQ_KEYS)
    assert 0.0 <= results["sem_seg"]["mIoU"] <= 100.0
