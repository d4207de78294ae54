"""Helpers for tests: the real shapes configs shrunk to test size, and the tiny dataset spec."""

from __future__ import annotations

from pathlib import Path

from panoptic_zoo.config import get_cfg
from panoptic_zoo.data.datasets.shapes import ShapesSpec

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"

# Odd, varied image sizes; 6 train images so two iterations of batch 2 see different images.
TINY_SHAPES_SPEC = ShapesSpec(seed=11, splits=(("train", 6), ("val", 3)), min_size=67, max_size=99)
TINY_SHAPES_PREFIX = "shapes_tiny"


def shrink_for_tests(cfg, output_dir: str | Path) -> None:
    """Shrink a real config to CPU test size without changing what code paths it takes."""
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
    cfg.OUTPUT_DIR = str(output_dir)


def shrunk_shapes_cfg(config_name: str, datasets: dict[str, str], output_dir, max_iter: int = 2):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / "shapes" / config_name))
    shrink_for_tests(cfg, output_dir)
    cfg.DATASETS.TRAIN = (datasets["train"],)
    cfg.DATASETS.TEST = (datasets["val"],)
    cfg.SOLVER.MAX_ITER = max_iter
    return cfg
