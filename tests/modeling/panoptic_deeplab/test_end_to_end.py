"""Panoptic-DeepLab through the real Trainer, mapper and evaluators on the tiny shapes dataset."""

from __future__ import annotations

import math

from panoptic_testing import assert_valid_evaluation, shrunk_shapes_cfg, train_and_read_results


def test_train_then_evaluate_pq_and_miou(tiny_shapes, tmp_path):
    cfg = shrunk_shapes_cfg("panoptic_deeplab_R_18.yaml", tiny_shapes, tmp_path, max_iter=2)
    logged, results = train_and_read_results(cfg)

    losses = [row for row in logged if "total_loss" in row]
    assert losses and all(
        math.isfinite(row[k])
        for row in losses
        for k in ("loss_sem_seg", "loss_center", "loss_offset")
    )
    # No instance AP: MASK_ON is off.
    assert_valid_evaluation(results, {"panoptic_seg", "sem_seg"})
