"""DeepLabV3+'s decoder fusion without the concatenation's copy (:class:`UpsampledIntoConcat`)."""

from __future__ import annotations

import torch
from torch import nn

from ..modeling.panoptic_deeplab.heads import UpsampledConcat
from .modules import replace_modules

__all__ = ["UpsampledIntoConcat", "use_upsampling_into_concat"]


class UpsampledIntoConcat(UpsampledConcat):
    """:class:`UpsampledConcat` that, when no gradient is recorded, upsamples the coarser level
    straight into its half of the fused tensor (``out=``, image by image: each image's channel
    slice is contiguous), instead of upsampling and then copying it with ``torch.cat``, which
    copied the decoder's widest tensor once more per level."""

    def forward(self, projected: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        # Exports (traces) take the plain concatenation: the ONNX tracer drops writes into views
        # (``out=``), and TorchScript's would keep the batch size and sizes of the example.
        recorded = torch.is_grad_enabled() and (projected.requires_grad or coarse.requires_grad)
        if recorded or torch.jit.is_tracing():
            return super().forward(projected, coarse)
        size = projected.shape[-2:]
        split = projected.shape[1]
        fused = projected.new_empty((projected.shape[0], split + coarse.shape[1], *size))
        fused[:, :split] = projected
        for image in range(len(fused)):
            torch.ops.aten.upsample_bilinear2d.out(
                coarse[image : image + 1], list(size), False, out=fused[image : image + 1, split:]
            )
        return fused


def use_upsampling_into_concat(model: nn.Module) -> int:
    """Replace every :class:`UpsampledConcat` of ``model`` by an :class:`UpsampledIntoConcat`,
    in place; returns how many."""
    return replace_modules(
        model, lambda m: type(m) is UpsampledConcat, lambda m: UpsampledIntoConcat().train(m.training)
    )
