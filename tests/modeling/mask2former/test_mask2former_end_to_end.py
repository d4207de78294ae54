"""Mask2Former through the real Trainer, mapper and evaluators on the tiny shapes dataset."""

from __future__ import annotations

import math

from panoptic_testing import assert_valid_evaluation, shrunk_shapes_cfg, train_and_read_results


def test_train_and_evaluate(tiny_shapes, tmp_path):
    cfg = shrunk_shapes_cfg("mask2former_R_18.yaml", tiny_shapes, tmp_path, max_iter=3)
    logged, results = train_and_read_results(cfg)

    losses = [row["total_loss"] for row in logged if "total_loss" in row]
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert_valid_evaluation(results, {"panoptic_seg", "bbox", "segm", "sem_seg"})
