"""
Folding inference-time batch norms into the convolutions before them.

In eval mode a batch norm is a fixed per-channel scale and shift, so the convolution it follows
can absorb it: ``W' = W * s``, ``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``.
That removes one full pass over every such layer's output (ResNet-50 has 53; at 800x1333 on 2
CPU threads they took ~0.25 s of Panoptic FPN's network). Outputs change only by float rounding.
Group norms depend on the input and stay.
"""

from __future__ import annotations

import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import nn

__all__ = ["fold_batch_norms"]


@torch.no_grad()
def fold_batch_norms(model: nn.Module) -> int:
    """
    Fold every frozen or eval-mode batch norm held by a detectron2 ``Conv2d`` (its ``norm``)
    into that convolution, in place; returns how many were folded. For inference only: the
    folded model has fewer parameters than its checkpoint, so it is refused in training mode.
    """
    if model.training:
        raise ValueError("fold_batch_norms is for inference: call model.eval() first")
    folded = 0
    for conv in model.modules():
        norm = getattr(conv, "norm", None) if isinstance(conv, Conv2d) else None
        if not isinstance(norm, (FrozenBatchNorm2d, nn.BatchNorm2d)):
            continue
        if isinstance(norm, nn.BatchNorm2d) and norm.running_var is None:
            continue  # normalizes with the batch's own statistics, even in eval mode
        scale = torch.rsqrt(norm.running_var + norm.eps)
        if norm.weight is not None:  # None: a BatchNorm2d without affine parameters
            scale = scale * norm.weight
        shift = -norm.running_mean * scale
        if norm.bias is not None:
            shift = shift + norm.bias
        if conv.bias is not None:
            shift = shift + conv.bias * scale
        conv.weight.mul_(scale.view(-1, *([1] * (conv.weight.dim() - 1))))
        conv.bias = nn.Parameter(shift, requires_grad=False)
        conv.norm = None
        folded += 1
    return folded
