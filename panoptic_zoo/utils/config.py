"""Config helpers: the methods' ``add_*_config`` functions, and shrinking a config to test size."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from detectron2.config import CfgNode

__all__ = ["add_missing_options", "shrink_to_test_size"]


def add_missing_options(node: CfgNode, defaults: Mapping[str, Any]) -> None:
    """
    Add ``defaults`` (nested mappings become sub-nodes) to ``node`` without overwriting any
    existing key, so an ``add_*_config`` is safe to call twice and never resets a value a user,
    a YAML file or another method has set.
    """
    for key, value in defaults.items():
        if isinstance(value, Mapping):
            if key not in node:
                node[key] = CfgNode()
            add_missing_options(node[key], value)
        elif key not in node:
            node[key] = value


def shrink_to_test_size(cfg: CfgNode) -> None:
    """
    Shrink a real config to CPU test size (small images, batches, proposal and detection
    counts, a flat learning rate) without changing which code paths it takes; shared by the
    tests and the benchmark's tiny mode.
    """
    cfg.MODEL.DEVICE = "cpu"
    cfg.INPUT.MIN_SIZE_TRAIN = (64, 80)
    cfg.INPUT.MAX_SIZE_TRAIN = 128
    cfg.INPUT.MIN_SIZE_TEST = 72
    cfg.INPUT.MAX_SIZE_TEST = 128
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.005
    cfg.SOLVER.WARMUP_ITERS = 1
    cfg.SOLVER.STEPS = ()
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 32
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 16
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 16
    cfg.TEST.DETECTIONS_PER_IMAGE = 10
