"""detectron2's DefaultTrainer with the mapper and evaluators chosen by config and metadata."""

from __future__ import annotations

import logging
import os
import weakref
from collections import OrderedDict

from detectron2.data import build_detection_test_loader
from detectron2.engine import DefaultTrainer, TrainerBase, create_ddp_model
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import build_checkpointer
from ..data import build_dataset_mapper
from ..data.check import check_training_datasets
from ..data.train_loader import build_resumable_train_loader
from ..evaluation import build_evaluators
from ..solver import build_lr_scheduler, build_optimizer
from ..utils.io import atomic_write_json
from ..utils.seeding import training_seed
from .inference import inference_copy
from .train_loop import FiniteLossAMPTrainer, FiniteLossSimpleTrainer, SeedEachIteration

__all__ = ["Trainer", "ddp_device_ids"]

EVAL_RESULTS_FILE = "eval_results.json"


def ddp_device_ids(cfg) -> list[int] | None:
    """
    ``DistributedDataParallel``'s ``device_ids`` for a model on ``cfg.MODEL.DEVICE``: this
    process's GPU, or None for a CPU model (torch refuses device_ids there, and upstream
    detectron2's ``create_ddp_model`` would pass ``[local_rank]``).
    """
    return [comm.get_local_rank()] if cfg.MODEL.DEVICE.startswith("cuda") else None


class Trainer(DefaultTrainer):
    """
    The trainer of every method: the dataset mapper comes from ``cfg.INPUT.DATASET_MAPPER_NAME``,
    the evaluators from each test dataset's metadata, the optimizer and schedule by name
    (``SOLVER.OPTIMIZER``, ``SOLVER.LR_SCHEDULER_NAME``), and every evaluation is also written to
    ``OUTPUT_DIR/eval_results.json``.

    Unlike detectron2's, a run interrupted at any moment and resumed (``resume_or_load(True)``)
    ends exactly as the uninterrupted run (CPU, ``SEED >= 0``): checkpoints are atomic and hold
    the optimizer state too, the data stream and the model's randomness are functions of
    ``(seed, iteration)``, and a non-finite loss stops training, naming the term, before the
    weights or any checkpoint are touched. See docs/RELIABILITY.md.
    """

    def __init__(self, cfg):
        # Not DefaultTrainer.__init__: the same steps in the same order, but with the
        # checkpointer, the per-term loss check and the resumable loader of this project, which
        # detectron2 builds inline there (and its SimpleTrainer starts the loader at once).
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False, device_ids=ddp_device_ids(cfg))
        trainer_class = FiniteLossAMPTrainer if cfg.SOLVER.AMP.ENABLED else FiniteLossSimpleTrainer
        self._trainer = trainer_class(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        # exact_fit=False: MODEL.WEIGHTS may be a backbone or another dataset's model
        # (fine-tuning); resuming this run's own checkpoints must still fit exactly.
        self.checkpointer = build_checkpointer(
            cfg, model, exact_fit=False, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        return [SeedEachIteration(training_seed(self.cfg)), *super().build_hooks()]

    def resume_or_load(self, resume: bool = True):
        super().resume_or_load(resume)
        self._trainer.data_loader.start_iter = self.start_iter

    # TrainerBase's state (iteration, hooks) plus the optimizer and AMP's grad scaler. Not
    # DefaultTrainer's: detectron2 0.6's leaves the optimizer out (a resumed run would restart
    # momentum and lr), and later versions' adds it but raises KeyError on a checkpoint without it.
    def state_dict(self):
        return {**TrainerBase.state_dict(self), "_trainer": self._trainer.state_dict()}

    def load_state_dict(self, state_dict):
        TrainerBase.load_state_dict(self, state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logging.getLogger(__name__).warning(
                "The checkpoint has no optimizer state (written by plain detectron2 0.6): the "
                "optimizer restarts from scratch, so the run will not match an uninterrupted one."
            )

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg):
        # Every problem of the training data is reported here, before any iteration runs.
        skip_files = frozenset(check_training_datasets(cfg))
        mapper = build_dataset_mapper(cfg, is_train=True)
        return build_resumable_train_loader(cfg, mapper, training_seed(cfg), skip_files)

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
        # The model --eval-only runs (optimized for the CPU by the config), also during training.
        results = super().test(cfg, inference_copy(cfg, model), evaluators)
        if comm.is_main_process():
            atomic_write_json(os.path.join(cfg.OUTPUT_DIR, EVAL_RESULTS_FILE), results)
        return results
