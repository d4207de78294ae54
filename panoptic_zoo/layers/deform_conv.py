"""
3x3 deformable convolution (DCNv1, or DCNv2 with modulation): torchvision's kernels, and for
CPU inference a faster equivalent (:func:`sampled_deform_conv3x3`).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import deform_conv2d

from . import _deform_sampling
from .cpu_kernels import check_float32_cpu, float32_cpu_or_absent

__all__ = ["DeformableConv3x3", "sampled_deform_conv3x3"]

_TAPS = 3 * 3
# Floats of one chunk of sampled columns (pixels x taps x in channels): 8 MB, which stay in the
# L3 cache between the sampling that writes them and the matrix product that reads them. UPSNet's
# semantic head at 800x1333 on 2 threads (nonzero offsets), medians of alternating runs: 1.89 s
# at 4 MB, 1.87 s at 8 MB, 1.91 s at 16 MB, 2.02 s at 32 MB.
_COLUMN_FLOATS = 2**21


@torch.library.custom_op("panoptic_zoo::sampled_deform_conv3x3", mutates_args=())
def sampled_deform_conv3x3(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """
    ``deform_conv2d(x, offset, weight, bias, padding=(1, 1), mask=mask)`` for a 3x3 kernel,
    stride 1, one offset group, float32 CPU tensors, without gradient: for chunks of
    ``_COLUMN_FLOATS`` / (9 x in channels) pixels, a C kernel (``_deform_sampling.c``, on
    PyTorch's OpenMP threads) samples the input at the nine offset positions of each
    pixel into columns (pixels x (taps x in channels)), and one matrix product with the weights
    gives those pixels' outputs: the matrix product of a plain convolution, plus the sampling.
    torchvision's CPU kernel samples in one thread from NCHW planes.

    A custom op (``panoptic_zoo::sampled_deform_conv3x3``), so that traces (fvcore's counts in
    :mod:`panoptic_zoo.benchmark.flops`) see one deformable convolution. The result has shape
    NCHW but channels-last memory (the product writes pixels as rows): a following deformable
    layer then reads its input with no copy; callers that need contiguous NCHW call
    ``.contiguous()``.
    """
    check_float32_cpu(
        "sampled_deform_conv3x3", "torchvision.ops.deform_conv2d",
        x=x, offset=offset, weight=weight, bias=bias, mask=mask,
    )  # fmt: skip
    batch, channels, height, width = x.shape
    out_channels = weight.shape[0]
    pixels = height * width
    if weight.shape != (out_channels, channels, 3, 3):
        raise ValueError(f"weight must be [out, {channels}, 3, 3]; got {list(weight.shape)}")
    # Weights as (tap, in channel) x out channel: the columns' order.
    weight_rows = weight.permute(2, 3, 1, 0).reshape(_TAPS * channels, out_channels)
    out = x.new_empty(batch, height, width, out_channels)
    chunk_pixels = max(1, _COLUMN_FLOATS // (_TAPS * channels))
    columns = x.new_empty(min(chunk_pixels, pixels), _TAPS * channels)
    threads = torch.get_num_threads()
    for image in range(batch):
        # Pixels as rows of channels: no copy when x is channels-last.
        inputs = x[image].permute(1, 2, 0).contiguous().numpy()
        offsets = offset[image].contiguous().numpy()
        masks = None if mask is None else mask[image].contiguous().numpy()
        out_rows = out[image].view(pixels, out_channels)
        for first in range(0, pixels, chunk_pixels):
            count = min(chunk_pixels, pixels - first)
            _deform_sampling.sample_columns(
                inputs, offsets, masks, columns[:count].numpy(), first, threads
            )
            if bias is None:
                torch.mm(columns[:count], weight_rows, out=out_rows[first : first + count])
            else:
                torch.addmm(bias, columns[:count], weight_rows, out=out_rows[first : first + count])
    return out.permute(0, 3, 1, 2)


class DeformableConv3x3(nn.Module):
    """
    3x3 deformable convolution: a plain 3x3 convolution (``offset``) predicts the sampling
    offsets (2 per tap) and, when ``modulated`` (DCNv2), a modulation per tap (sigmoid of its
    last 9 channels, the layout of detectron2's and mmcv's modulated layers). Runs through
    ``torchvision.ops.deform_conv2d``, which has CPU and CUDA kernels for forward and backward
    (upstream detectron2's compiled deformable convolutions have no CPU kernels); CPU inference
    (no gradient, float32) through the faster :func:`sampled_deform_conv3x3`, whose result is
    channels-last in memory.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, modulated=False):
        super().__init__()
        self.modulated = modulated
        self.offset = nn.Conv2d(in_channels, (3 if modulated else 2) * _TAPS, 3, padding=1)
        # Zero offsets (and modulation 0.5) at the start: a regular 3x3 convolution.
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=1)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset(x)
        mask = None
        if self.modulated:
            offset, mask = offset[:, : 2 * _TAPS], offset[:, 2 * _TAPS :].sigmoid()
        arguments = (x, offset, self.weight, self.bias, mask)
        if not torch.is_grad_enabled() and all(map(float32_cpu_or_absent, arguments)):
            return sampled_deform_conv3x3(*arguments)
        return deform_conv2d(x, offset, self.weight, self.bias, padding=(1, 1), mask=mask)
