"""
Folding inference-time batch norms into the convolutions before them.

In eval mode a batch norm is a fixed per-channel scale and shift, so the convolution it follows
can absorb it: ``W' = W * s``, ``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``.
That removes one full pass over every such layer's output (ResNet-50 has 53). Outputs change
only by float rounding.
Group norms depend on the input and stay.
"""

from __future__ import annotations

import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import nn

__all__ = ["fold_batch_norms"]


def _foldable_convolutions(model: nn.Module) -> list[Conv2d]:
    """The detectron2 ``Conv2d`` layers of ``model`` whose ``norm`` is a frozen batch norm or a
    batch norm with running statistics."""
    return [
        conv
        for conv in model.modules()
        if isinstance(conv, Conv2d)
        and (
            isinstance(conv.norm, FrozenBatchNorm2d)
            or (isinstance(conv.norm, nn.BatchNorm2d) and conv.norm.running_var is not None)
        )
    ]


@torch.no_grad()
def fold_batch_norms(model: nn.Module) -> int:
    """
    Fold the norm of every :func:`_foldable_convolutions` layer into its convolution, in place;
    returns how many were folded. For inference only: the folded model has other parameters
    than its checkpoint, so it is refused in training mode.
    """
    if model.training:
        raise ValueError("fold_batch_norms is for inference: call model.eval() first")
    convolutions = _foldable_convolutions(model)
    for conv in convolutions:
        norm = conv.norm
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
    return len(convolutions)
