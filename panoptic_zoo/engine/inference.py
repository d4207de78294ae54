"""The model an inference entry point runs (evaluation, demo, benchmark), built one way."""

from __future__ import annotations

import logging

from detectron2.config import CfgNode
from detectron2.modeling import build_model
from torch import nn

from ..checkpoint import build_checkpointer
from ..modeling.norm_folding import fold_batch_norms

__all__ = ["build_inference_model"]

logger = logging.getLogger(__name__)


def build_inference_model(
    cfg: CfgNode, weights: str, *, resume: bool = False, fold_norms: bool | None = None
) -> nn.Module:
    """
    ``cfg``'s model in eval mode with ``weights`` loaded, exactly (a partly loaded model would
    report numbers of random weights; "" keeps the initialization); with ``resume``, the last
    checkpoint of ``cfg.OUTPUT_DIR`` instead where there is one. Batch norms are folded into
    their convolutions when ``fold_norms`` (default: ``cfg.TEST.FOLD_BATCH_NORMS``), after
    loading, so the model is for inference only.
    """
    model = build_model(cfg).eval()
    build_checkpointer(cfg, model, exact_fit=True).resume_or_load(weights, resume=resume)
    if cfg.TEST.FOLD_BATCH_NORMS if fold_norms is None else fold_norms:
        logger.info("Folded %d batch norms into their convolutions", fold_batch_norms(model))
    return model
