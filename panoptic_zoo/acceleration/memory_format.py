"""
Running the backbone in channels-last memory format for CPU inference.

oneDNN's convolutions read and write channels-last (NHWC) tensors directly, while NCHW ones are
reordered to a blocked layout and back around every layer. The heads stay NCHW: depthwise
convolutions (Panoptic-DeepLab's ASPP) run much slower channels-last, and the per-pixel
post-processing expects contiguous class maps. So the backbone's outputs are made contiguous
again, and everything after it sees what it saw before, except the features of
:func:`projection_only_features`: all their readers take either format (Panoptic-DeepLab's
decoder projections, 1x1 convolutions that oneDNN runs faster on channels-last input than on
NCHW, which it reorders first), so they skip the copy. Timings in docs/ACCELERATION.md.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from ..modeling.panoptic_deeplab import PanopticDeepLabModel

__all__ = ["channels_last_backbone", "nchw_contiguous", "projection_only_features"]


def nchw_contiguous(x: torch.Tensor) -> torch.Tensor:
    """
    ``x.contiguous()`` of a 4-D tensor. A channels-last CPU tensor is copied image by image as
    a 2-D (pixels x channels) transpose: PyTorch's 2-D transposing copy is several times faster
    than its 4-D permuting one, which suffers most at power-of-two channel counts.
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


def projection_only_features(model: nn.Module) -> tuple[str, ...]:
    """The backbone outputs of ``model`` that only 1x1 projections read: for Panoptic-DeepLab,
    the decoders' inputs other than ASPP's (res2, res3), read by both branches' projections
    and nothing else; none for other models."""
    if not isinstance(model, PanopticDeepLabModel):
        return ()
    # in_features[-1] is each branch's ASPP input.
    sem, ins = (set(h.in_features[:-1]) for h in (model.sem_seg_head, model.ins_embed_head))
    return tuple(sorted(sem & ins))


def channels_last_backbone(model: nn.Module, keep: tuple[str, ...] = ()) -> None:
    """Convert ``model.backbone``'s weights to channels-last, in place, and return its feature
    maps NCHW-contiguous (a forward hook), except those named in ``keep``, which stay
    channels-last. Outputs change only by float rounding."""
    keep = frozenset(keep)
    unknown = keep - set(model.backbone.output_shape())
    if unknown:
        raise ValueError(f"channels-last features {sorted(unknown)} are not backbone outputs")
    model.backbone.to(memory_format=torch.channels_last)
    model.backbone.register_forward_hook(functools.partial(_contiguous_features, keep=keep))
