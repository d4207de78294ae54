"""The model an inference entry point runs (evaluation, demo, benchmark), built one way."""

from __future__ import annotations

import logging

from detectron2.config import CfgNode
from detectron2.modeling import build_model
from torch import nn

from ..checkpoint import build_checkpointer
from ..layers.depthwise_conv import use_depthwise_kernel
from ..modeling.memory_format import channels_last_backbone
from ..modeling.norm_folding import fold_batch_norms

__all__ = ["apply_inference_changes", "build_inference_model", "without_inference_changes"]

logger = logging.getLogger(__name__)


def build_inference_model(cfg: CfgNode, weights: str, *, resume: bool = False) -> nn.Module:
    """
    ``cfg``'s model in eval mode with ``weights`` loaded, exactly (a partly loaded model would
    report numbers of random weights; "" keeps the initialization); with ``resume``, the last
    checkpoint of ``cfg.OUTPUT_DIR`` instead where there is one; then, after loading, the
    config's :func:`apply_inference_changes`.
    """
    model = build_model(cfg).eval()
    build_checkpointer(cfg, model, exact_fit=True).resume_or_load(weights, resume=resume)
    apply_inference_changes(cfg, model)
    return model


def apply_inference_changes(cfg: CfgNode, model: nn.Module) -> dict:
    """
    Change the eval-mode ``model`` for inference only, in place: batch norms folded into their
    convolutions (``TEST.FOLD_BATCH_NORMS``) and, on the CPU, a channels-last backbone
    (``TEST.CHANNELS_LAST_BACKBONE``) and stride-1 depthwise convolutions by the project's C
    kernel (``TEST.DEPTHWISE_KERNEL``). Each changes outputs only by float rounding.
    Returns what was changed, also kept as the model's ``inference_changes``.
    """
    on_cpu = cfg.MODEL.DEVICE == "cpu"
    changes = {
        "batch_norms_folded": fold_batch_norms(model) if cfg.TEST.FOLD_BATCH_NORMS else 0,
        "channels_last_backbone": on_cpu and cfg.TEST.CHANNELS_LAST_BACKBONE,
        "depthwise_kernel_convolutions": (
            use_depthwise_kernel(model) if on_cpu and cfg.TEST.DEPTHWISE_KERNEL else 0
        ),
    }
    if changes["channels_last_backbone"]:
        channels_last_backbone(model)
    logger.info("Inference changes: %s", changes)
    model.inference_changes = changes
    return changes


def without_inference_changes(cfg: CfgNode) -> CfgNode:
    """``cfg`` with the inference changes of :func:`build_inference_model` turned off: the model
    as the checkpoint holds it, and as detectron2 would run it."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.TEST.FOLD_BATCH_NORMS = False
    cfg.TEST.CHANNELS_LAST_BACKBONE = False
    cfg.TEST.DEPTHWISE_KERNEL = False
    cfg.freeze()
    return cfg
