"""
Running the backbone in channels-last memory format for CPU inference.

oneDNN's convolutions read and write channels-last (NHWC) tensors directly, while NCHW ones are
reordered to a blocked layout and back around every layer: at 800x1333 on 2 threads a 3x3
256->256 convolution ran at ~177 GFLOP/s channels-last and 94-131 NCHW, and the ResNet-50(-FPN)
backbones of all four methods 0.4-0.8 s faster end to end. The heads stay NCHW: depthwise
convolutions (Panoptic-DeepLab's ASPP) ran ~10x slower channels-last, and the per-pixel
post-processing expects contiguous class maps. So the backbone's outputs are made contiguous
again, and everything after it sees what it saw before, except the outputs a model names in its
``channels_last_features``: all their readers take either format (Panoptic-DeepLab's decoder
projections, 1x1 convolutions that oneDNN runs faster on channels-last input than on NCHW,
which it reorders first), so they skip the copy.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

__all__ = ["channels_last_backbone", "nchw_contiguous"]


def nchw_contiguous(x: torch.Tensor) -> torch.Tensor:
    """
    ``x.contiguous()`` of a 4-D tensor. A channels-last CPU tensor is copied image by image as
    a 2-D (pixels x channels) transpose: PyTorch's 2-D transposing copy is 2-4x faster than its
    4-D permuting one, which suffers most at power-of-two channel counts (256 x 200 x 336
    floats on 2 threads: 86-116 ms -> 23-27 ms; 2048 x 50 x 84: 28-29 -> 13-18 ms).
    """
    if (
        x.device.type != "cpu"
        or torch.jit.is_tracing()  # a trace would keep the loop's count: the traced batch size
        or x.dim() != 4
        or x.is_contiguous()
        or not x.is_contiguous(memory_format=torch.channels_last)
    ):
        return x.contiguous()
    batch, channels, height, width = x.shape
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    for image in range(batch):
        pixels_by_channels = x[image].permute(1, 2, 0).reshape(height * width, channels)
        out[image].view(channels, height * width).copy_(pixels_by_channels.t())
    return out


def _contiguous_features(
    module, args, features: dict[str, torch.Tensor], *, keep: frozenset[str]
) -> dict[str, torch.Tensor]:
    return {
        name: feature if name in keep else nchw_contiguous(feature)
        for name, feature in features.items()
    }


def channels_last_backbone(model: nn.Module) -> None:
    """Convert ``model.backbone``'s weights to channels-last, in place, and return its feature
    maps NCHW-contiguous (a forward hook), except those named in ``model.channels_last_features``
    (if the model has that attribute), which stay channels-last. Outputs change only by float
    rounding."""
    keep = frozenset(getattr(model, "channels_last_features", ()))
    unknown = keep - set(model.backbone.output_shape())
    if unknown:
        raise ValueError(f"channels_last_features {sorted(unknown)} are not backbone outputs")
    model.backbone.to(memory_format=torch.channels_last)
    model.backbone.register_forward_hook(functools.partial(_contiguous_features, keep=keep))
