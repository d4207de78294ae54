"""One call that applies the config's CPU acceleration to a built, loaded model."""

from __future__ import annotations

import logging

from detectron2.config import CfgNode
from torch import nn

from .class_maps import use_class_map_kernels
from .decoder_concat import use_upsampling_into_concat
from .deform_conv import use_deform_sampling_kernel, use_onnxruntime_deformable_convolutions
from .depthwise_conv import use_onnxruntime_depthwise_convolutions
from .level_sum import use_level_sum_predictor
from .memory_format import channels_last_backbone, projection_only_features
from .norm_folding import fold_batch_norms
from .onnxruntime_layers import onnxruntime_installed

__all__ = ["optimize_for_cpu"]

logger = logging.getLogger(__name__)


def optimize_for_cpu(model: nn.Module, cfg: CfgNode) -> dict:
    """
    Apply ``cfg.ACCELERATION.CPU``'s options to the eval-mode ``model`` in place, when
    ``cfg.MODEL.DEVICE`` is "cpu" and ``ACCELERATION.CPU.ENABLED``: modules replaced by faster
    ones of the same parameters (by type), batch norms folded, the backbone channels-last, the
    class-map C kernels in its forward. Outputs change only by float rounding. Returns what was
    changed, also kept as the model's ``cpu_optimizations``; a model already optimized (with the
    options enabled) is left as it is.
    """
    if getattr(model, "_cpu_optimized", False):
        return model.cpu_optimizations
    if model.training:
        raise ValueError("optimize_for_cpu is for inference: call model.eval() first")
    options = cfg.ACCELERATION.CPU
    enabled = options.ENABLED and cfg.MODEL.DEVICE == "cpu"
    changes = {
        "batch_norms_folded": 0,
        "channels_last_backbone": False,
        "depthwise_onnxruntime_convolutions": 0,
        "deformable_kernel_convolutions": 0,
        "deformable_onnxruntime_convolutions": 0,
        "class_map_kernels": False,
        "level_sum_predictors": 0,
        "upsampling_into_concat": 0,
    }
    if enabled:
        if options.FOLD_BATCH_NORMS:
            changes["batch_norms_folded"] = fold_batch_norms(model)
        if options.CHANNELS_LAST_BACKBONE:
            channels_last_backbone(model, keep=projection_only_features(model))
            changes["channels_last_backbone"] = True
        # Before the ONNX Runtime options: those take the deformable layers left plain.
        if options.DEFORMABLE_KERNEL:
            changes["deformable_kernel_convolutions"] = use_deform_sampling_kernel(model)
        onnxruntime_options = {
            "DEPTHWISE_ONNXRUNTIME": (
                "depthwise_onnxruntime_convolutions", use_onnxruntime_depthwise_convolutions
            ),
            "DEFORMABLE_ONNXRUNTIME": (
                "deformable_onnxruntime_convolutions", use_onnxruntime_deformable_convolutions
            ),
        }
        for option, (change, use) in onnxruntime_options.items():
            if options[option] and onnxruntime_installed():
                changes[change] = use(model)
            elif options[option]:
                logger.info(
                    "ACCELERATION.CPU.%s skipped: onnxruntime is not installed "
                    "(scripts/setup.sh --extra deploy)", option,
                )  # fmt: skip
        if options.CLASS_MAP_KERNELS:
            changes["class_map_kernels"] = use_class_map_kernels(model)
        if options.LEVEL_SUM_PREDICTOR:
            changes["level_sum_predictors"] = use_level_sum_predictor(model)
        if options.UPSAMPLE_INTO_CONCAT:
            changes["upsampling_into_concat"] = use_upsampling_into_concat(model)
    logger.info("CPU optimizations: %s", changes)
    model.cpu_optimizations = changes
    # Not "has cpu_optimizations": a model built without the options (the benchmark counts its
    # parameters so) is optimized by a later call with them.
    model._cpu_optimized = enabled
    return changes
