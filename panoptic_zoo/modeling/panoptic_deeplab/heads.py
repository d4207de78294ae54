"""
Panoptic-DeepLab's two branches: detectron2's reference heads (same layers, same parameter
names, so checkpoints load into either) configured from ``MODEL.PANOPTIC_DEEPLAB`` and fixed
where the reference breaks:

* ASPP image pooling: with a training crop, the reference pools over a fixed crop-sized window
  and rejects any input not divisible by it; here the window shrinks to the input where the
  input is smaller and any size is accepted (the same result wherever the reference works);
* the semantic loss accepts per-pixel weights with ``cross_entropy`` too (the reference passes
  the small-instance weights to ``nn.CrossEntropyLoss``, which fails).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ASPP, ShapeSpec
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from detectron2.projects.deeplab import DeepLabV3PlusHead
from detectron2.projects.deeplab.loss import DeepLabCE
from detectron2.projects.panoptic_deeplab import (
    INS_EMBED_BRANCHES_REGISTRY,
    PanopticDeepLabInsEmbedHead,
    PanopticDeepLabSemSegHead,
)
from torch import nn

from ...layers import window_mean
from .ids import UnifiedIds

__all__ = [
    "AnySizeImagePooling",
    "PanopticDeepLabInstanceHead",
    "PanopticDeepLabSemanticHead",
    "UpsampledConcat",
]

LOSS_TYPES = ("cross_entropy", "hard_pixel_mining")


class AnySizeImagePooling(nn.Module):
    """
    ASPP's image pooling over a ``kernel_size`` window (stride 1), clipped to the input: a
    global average over any dimension smaller than the window.
    """

    def __init__(self, kernel_size: tuple[int, int]):
        super().__init__()
        self.kernel_size = tuple(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window = (min(self.kernel_size[0], x.shape[-2]), min(self.kernel_size[1], x.shape[-1]))
        if torch.jit.is_tracing() and window == tuple(x.shape[-2:]):
            # The global mean of any size: an export traced on a map within the window holds
            # for every map within it.
            return F.adaptive_avg_pool2d(x, 1)
        return window_mean(x, window)


def _pool_any_size(aspp: ASPP) -> None:
    if aspp.pool_kernel_size is not None:
        aspp.convs[-1][0] = AnySizeImagePooling(aspp.pool_kernel_size)
        aspp.pool_kernel_size = None  # turns off ASPP.forward's divisibility check


class UpsampledConcat(nn.Module):
    """The input of a DeepLabV3+ fusion convolution: the projected finer level and the coarser
    level upsampled (bilinearly) to its size, concatenated along channels."""

    def forward(self, projected: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        size = projected.shape[-2:]
        upsampled = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
        return torch.cat([projected, upsampled], dim=1)


class _DecoderWithConcatModule(DeepLabV3PlusHead):
    """DeepLabV3+'s decoder (``layers``), the same computation, with its upsampling and
    concatenation in a module (``upsampled_concat``), which the CPU acceleration replaces."""

    def layers(self, features):
        y = None
        for level in self.in_features[::-1]:  # coarse to fine
            projected = self.decoder[level]["project_conv"](features[level])
            if self.decoder[level]["fuse_conv"] is None:  # the coarsest level: ASPP
                y = projected
            else:
                y = self.decoder[level]["fuse_conv"](self.upsampled_concat(projected, y))
        return y if self.decoder_only else self.predictor(y)


def _branch_config(node, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
    """Constructor arguments of a DeepLabV3+ branch (ASPP + decoder) from its config node."""
    missing = [f for f in node.IN_FEATURES if f not in input_shape]
    if missing:
        raise ValueError(
            f"{node.NAME}: IN_FEATURES {missing} are not backbone outputs "
            f"(available: {sorted(input_shape)})"
        )
    train_size = None
    if cfg.INPUT.CROP.ENABLED:
        if cfg.INPUT.CROP.TYPE != "absolute":
            raise ValueError(
                "Panoptic-DeepLab sizes ASPP's image pooling to the training crop: "
                f"INPUT.CROP.TYPE must be 'absolute', got {cfg.INPUT.CROP.TYPE!r}"
            )
        train_size = cfg.INPUT.CROP.SIZE
    return {
        "input_shape": {k: v for k, v in input_shape.items() if k in node.IN_FEATURES},
        "project_channels": node.PROJECT_CHANNELS,
        "aspp_dilations": node.ASPP_DILATIONS,
        "aspp_dropout": node.ASPP_DROPOUT,
        "decoder_channels": [node.CONVS_DIM] * (len(node.IN_FEATURES) - 1) + [node.ASPP_CHANNELS],
        "common_stride": node.COMMON_STRIDE,
        "norm": node.NORM,
        "train_size": train_size,
        "head_channels": node.HEAD_CHANNELS,
        "use_depthwise_separable_conv": cfg.MODEL.PANOPTIC_DEEPLAB.USE_DEPTHWISE_SEPARABLE_CONV,
    }


@SEM_SEG_HEADS_REGISTRY.register()
class PanopticDeepLabSemanticHead(PanopticDeepLabSemSegHead, _DecoderWithConcatModule):
    """Semantic branch: dual-ASPP/decoder half predicting the unified classes."""

    @configurable
    def __init__(self, input_shape, *, loss_type: str, loss_top_k: float, **kwargs):
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"semantic LOSS_TYPE must be one of {LOSS_TYPES}, got {loss_type!r}")
        super().__init__(input_shape, loss_type=loss_type, loss_top_k=loss_top_k, **kwargs)
        self.upsampled_concat = UpsampledConcat()
        _pool_any_size(self.decoder[self.in_features[-1]]["project_conv"])
        # Cross entropy is hard pixel mining over all pixels; DeepLabCE takes pixel weights.
        top_k = loss_top_k if loss_type == "hard_pixel_mining" else 1.0
        self.loss = DeepLabCE(ignore_label=self.ignore_value, top_k_percent_pixels=top_k)

    @classmethod
    def from_config(cls, cfg, input_shape):
        node = cfg.MODEL.PANOPTIC_DEEPLAB.SEM_SEG_HEAD
        return {
            **_branch_config(node, cfg, input_shape),
            "loss_weight": node.LOSS_WEIGHT,
            "loss_type": node.LOSS_TYPE,
            "loss_top_k": node.LOSS_TOP_K,
            "ignore_value": node.IGNORE_VALUE,
            "num_classes": UnifiedIds.from_config(cfg).num_classes,
        }


@INS_EMBED_BRANCHES_REGISTRY.register()
class PanopticDeepLabInstanceHead(PanopticDeepLabInsEmbedHead, _DecoderWithConcatModule):
    """Instance branch: class-agnostic center heatmap (MSE) and center offsets (L1)."""

    @configurable
    def __init__(self, input_shape, **kwargs):
        super().__init__(input_shape, **kwargs)
        self.upsampled_concat = UpsampledConcat()
        _pool_any_size(self.decoder[self.in_features[-1]]["project_conv"])

    @classmethod
    def from_config(cls, cfg, input_shape):
        node = cfg.MODEL.PANOPTIC_DEEPLAB.INS_EMBED_HEAD
        return {
            **_branch_config(node, cfg, input_shape),
            "center_loss_weight": node.CENTER_LOSS_WEIGHT,
            "offset_loss_weight": node.OFFSET_LOSS_WEIGHT,
        }
