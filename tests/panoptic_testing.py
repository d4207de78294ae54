"""
Helpers for tests: the real shapes configs shrunk to test size, the tiny dataset spec, and the
train-then-evaluate and batch-versus-single-image checks every method's tests share.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from detectron2.data import DatasetCatalog

from panoptic_zoo.config import get_cfg
from panoptic_zoo.data import build_dataset_mapper
from panoptic_zoo.data.datasets.shapes import ShapesSpec
from panoptic_zoo.engine import Trainer
from panoptic_zoo.engine.trainer import EVAL_RESULTS_FILE
from panoptic_zoo.utils.config import shrink_to_test_size

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"

# Odd, varied image sizes; 6 train images so two iterations of batch 2 see different images.
TINY_SHAPES_SPEC = ShapesSpec(seed=11, splits=(("train", 6), ("val", 3)), min_size=67, max_size=99)
TINY_SHAPES_PREFIX = "shapes_tiny"


def shrunk_shapes_cfg(config_name: str, datasets: dict[str, str], output_dir, max_iter: int = 2):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / "shapes" / config_name))
    shrink_to_test_size(cfg)
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.DATASETS.TRAIN = (datasets["train"],)
    cfg.DATASETS.TEST = (datasets["val"],)
    cfg.SOLVER.MAX_ITER = max_iter
    return cfg


PQ_KEYS = {"PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"}


def train_and_read_results(cfg) -> tuple[list[dict], dict]:
    """Train ``cfg`` with the real Trainer; return the logged metric rows and the final evaluation."""
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    output_dir = Path(cfg.OUTPUT_DIR)
    logged = [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]
    return logged, json.loads((output_dir / EVAL_RESULTS_FILE).read_text())


def assert_valid_evaluation(results: dict, tasks: set[str]) -> None:
    """Exactly ``tasks`` were evaluated, with every PQ figure (and mIoU) in [0, 100]."""
    assert set(results) == tasks
    assert PQ_KEYS <= set(results["panoptic_seg"])
    assert all(0.0 <= results["panoptic_seg"][k] <= 100.0 for k in PQ_KEYS)
    if "sem_seg" in results:
        assert 0.0 <= results["sem_seg"]["mIoU"] <= 100.0


def distinct_untrained_queries(model) -> None:
    """
    Untrained Mask2Former class weights give every query a score near 1 / (K + 1), where float
    rounding reorders the queries' pixels, and often "no object" (dropped): weights drawn at
    std 1 give distinct scores, as trained queries have; a low "no object" bias keeps every
    query.
    """
    with torch.no_grad():
        model.head.predictor.class_embed.weight.normal_(0, 1)
        model.head.predictor.class_embed.bias[-1] = -10.0


def predict_batched_and_single(cfg, dataset_name: str, adjust_model=None):
    """
    The untrained model of ``cfg`` (changed by ``adjust_model(model)`` when given) on the first
    two (differently sized) images of ``dataset_name``, once as a batch of 2 and once image by
    image: ``(model, inputs, batched_outputs, single_outputs)``.
    """
    model = Trainer.build_model(cfg).eval()
    if adjust_model is not None:
        adjust_model(model)
    mapper = build_dataset_mapper(cfg, is_train=False)
    inputs = [mapper(record) for record in DatasetCatalog.get(dataset_name)[:2]]
    assert inputs[0]["image"].shape != inputs[1]["image"].shape
    with torch.no_grad():
        batched = model(inputs)
        single = [model([x])[0] for x in inputs]
    return model, inputs, batched, single
