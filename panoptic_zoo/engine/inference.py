"""The model an evaluation or inference entry point runs (train_net.py's evaluation during
training and with --eval-only, demo, benchmark), built one way."""

from __future__ import annotations

import copy

from detectron2.config import CfgNode
from detectron2.modeling import build_model
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..acceleration import optimize_for_cpu
from ..checkpoint import build_checkpointer

__all__ = ["build_inference_model", "inference_copy", "without_acceleration"]


def build_inference_model(cfg: CfgNode, weights: str, *, resume: bool = False) -> nn.Module:
    """
    ``cfg``'s model in eval mode with ``weights`` loaded, exactly (a partly loaded model would
    report numbers of random weights; "" keeps the initialization); with ``resume``, the last
    checkpoint of ``cfg.OUTPUT_DIR`` instead where there is one; then, after loading,
    :func:`~panoptic_zoo.acceleration.optimize_for_cpu` with ``cfg``.
    """
    model = build_model(cfg).eval()
    build_checkpointer(cfg, model, exact_fit=True).resume_or_load(weights, resume=resume)
    optimize_for_cpu(model, cfg)
    return model


def inference_copy(cfg: CfgNode, model: nn.Module) -> nn.Module:
    """
    The model that evaluation runs for ``model``: ``model`` itself where it is already one
    (:func:`build_inference_model`'s), else an eval-mode copy (of the module inside a
    ``DistributedDataParallel``) optimized as :func:`build_inference_model` does, so that
    evaluation during training runs what ``--eval-only`` runs, and training goes on unchanged.
    """
    if hasattr(model, "cpu_optimizations"):
        return model
    if isinstance(model, DistributedDataParallel):
        model = model.module
    copied = copy.deepcopy(model).eval()
    optimize_for_cpu(copied, cfg)
    return copied


def without_acceleration(cfg: CfgNode) -> CfgNode:
    """``cfg`` with ``ACCELERATION.CPU.ENABLED`` off: the model as the checkpoint holds it, and
    as detectron2 would run it."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.ACCELERATION.CPU.ENABLED = False
    cfg.freeze()
    return cfg
