"""detectron2's DefaultTrainer with the mapper and evaluators chosen by config and metadata."""

from __future__ import annotations

import os
from collections import OrderedDict

from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer
from detectron2.utils import comm

from ..data import build_dataset_mapper
from ..evaluation import build_evaluators
from ..solver import build_lr_scheduler, build_optimizer
from ..utils.io import atomic_write_json

__all__ = ["Trainer"]

EVAL_RESULTS_FILE = "eval_results.json"


class Trainer(DefaultTrainer):
    """
    The trainer of every method: the dataset mapper comes from ``cfg.INPUT.DATASET_MAPPER_NAME``,
    the evaluators from each test dataset's metadata, the optimizer and schedule by name
    (``SOLVER.OPTIMIZER``, ``SOLVER.LR_SCHEDULER_NAME``), and every evaluation is also written to
    ``OUTPUT_DIR/eval_results.json``.
    """

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=build_dataset_mapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=build_dataset_mapper(cfg, is_train=False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluators(cfg, dataset_name, output_folder)

    @classmethod
    def test(cls, cfg, model, evaluators=None) -> OrderedDict:
        results = super().test(cfg, model, evaluators)
        if comm.is_main_process():
            atomic_write_json(os.path.join(cfg.OUTPUT_DIR, EVAL_RESULTS_FILE), results)
        return results
