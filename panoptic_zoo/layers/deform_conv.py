"""
3x3 deformable convolution (DCNv1, or DCNv2 with modulation): torchvision's kernels, and for
CPU inference a faster equivalent (:func:`sampled_deform_conv3x3`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import deform_conv2d

__all__ = ["DeformableConv3x3", "sampled_deform_conv3x3"]

_TAPS = 3 * 3
# Tap k of the 3x3 kernel (row-major) looks at (y + dy, x + dx), before its learned offset.
_TAP_DY = (-1, -1, -1, 0, 0, 0, 1, 1, 1)
_TAP_DX = (-1, 0, 1, -1, 0, 1, -1, 0, 1)
# Floats of the per-tap response table (pixels x taps x output channels) built at once; larger
# layers build it for a group of taps at a time.
_TABLE_FLOATS = 64 * 2**20


def sampled_deform_conv3x3(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """
    ``deform_conv2d(x, offset, weight, bias, padding=(1, 1), mask=mask)`` for a 3x3 kernel,
    stride 1, one offset group, as one matrix product and one gather. Bilinear sampling is
    linear, so a tap's weights may be applied before sampling: a GEMM turns every pixel into its
    response to each tap (a pixels x (taps x out channels) table), and ``F.embedding_bag`` sums,
    for each output pixel, the table rows at the four corners of its nine sampling positions
    with the bilinear weights (times the modulation), with torchvision's rules (corners outside
    the image read zero). This has the dense GEMM shape of a plain convolution and never
    materializes the sampled input (pixels x 9 x in channels). Large layers build the table
    for a group of taps at a time (``_TABLE_FLOATS``). On 2 CPU threads ~12x faster than
    torchvision's kernel, which samples in one thread (256->128 channels at 200x336: 3.6 s ->
    0.27-0.31 s); equal to it up to float rounding.

    The result has shape NCHW but channels-last memory (the gather writes pixels as rows):
    a following deformable layer then reads its input with no copy; callers that need
    contiguous NCHW call ``.contiguous()``.
    """
    batch, channels, height, width = x.shape
    out_channels = weight.shape[0]
    pixels = height * width
    offset = offset.view(batch, _TAPS, 2, height, width)
    rows = torch.arange(height, dtype=x.dtype, device=x.device).view(1, 1, height, 1)
    columns = torch.arange(width, dtype=x.dtype, device=x.device).view(1, 1, 1, width)
    tap_dy = torch.tensor(_TAP_DY, dtype=x.dtype, device=x.device).view(1, _TAPS, 1, 1)
    tap_dx = torch.tensor(_TAP_DX, dtype=x.dtype, device=x.device).view(1, _TAPS, 1, 1)
    # Sampling positions, per pixel and tap (pixel-major order, as the gather's bags).
    sample_y = (rows + tap_dy + offset[:, :, 0]).permute(0, 2, 3, 1)
    sample_x = (columns + tap_dx + offset[:, :, 1]).permute(0, 2, 3, 1)
    # Weights as in channels x (tap, out channel): the table's columns.
    weight = weight.permute(1, 2, 3, 0).reshape(channels, _TAPS * out_channels)
    tap_groups = _tap_groups(pixels + 1, out_channels)
    results = []
    for image in range(batch):
        corners, corner_weights = _bilinear_corners(
            sample_y[image], sample_x[image], height, width
        )
        corners = corners.view(pixels, _TAPS, 4)
        corner_weights = corner_weights.view(pixels, _TAPS, 4)
        if mask is not None:
            corner_weights = corner_weights * mask[image].reshape(_TAPS, pixels).t()[..., None]
        # Pixels as rows of channels: a view when x is channels-last.
        inputs = x[image].permute(1, 2, 0).reshape(pixels, channels)
        result = None
        for taps in tap_groups:
            num_taps = taps.stop - taps.start
            # Row p * num_taps + j of the table: pixel p's response to tap first + j; the
            # rows of "pixel" ``pixels`` (the outside) are zero.
            table = x.new_empty(pixels + 1, num_taps * out_channels)
            torch.mm(
                inputs, weight[:, taps.start * out_channels : taps.stop * out_channels],
                out=table[:-1],
            )  # fmt: skip
            table[-1] = 0
            tap_rows = torch.arange(num_taps, device=x.device).view(1, num_taps, 1)
            bags = F.embedding_bag(
                (corners[:, taps] * num_taps + tap_rows).view(pixels, 4 * num_taps),
                table.view(-1, out_channels),
                per_sample_weights=corner_weights[:, taps].reshape(pixels, 4 * num_taps),
                mode="sum",
            )
            result = bags if result is None else result.add_(bags)
        if bias is not None:
            result += bias
        results.append(result)
    out = results[0][None] if batch == 1 else torch.stack(results)
    return out.view(batch, height, width, out_channels).permute(0, 3, 1, 2)


def _tap_groups(rows: int, out_channels: int) -> list[slice]:
    """The taps in groups of (nearly) equal size whose table (``rows`` x taps x
    ``out_channels``) stays within ``_TABLE_FLOATS`` (one tap per group at least)."""
    largest = max(1, _TABLE_FLOATS // (rows * out_channels))
    size = math.ceil(_TAPS / math.ceil(_TAPS / largest))
    return [slice(first, min(first + size, _TAPS)) for first in range(0, _TAPS, size)]


def _bilinear_corners(y: torch.Tensor, x: torch.Tensor, height: int, width: int):
    """
    Rows (``y * width + x``) of the four pixels around each position and their bilinear weights,
    ``[positions, 4]`` each; corners outside the image point at the zero row ``height * width``.
    """
    y_low, x_low = y.floor(), x.floor()
    fraction_y, fraction_x = y - y_low, x - x_low
    y_low, x_low = y_low.long(), x_low.long()
    corners, weights = [], []
    for dy, weight_y in ((0, 1 - fraction_y), (1, fraction_y)):
        for dx, weight_x in ((0, 1 - fraction_x), (1, fraction_x)):
            corner_y, corner_x = y_low + dy, x_low + dx
            inside = (corner_y >= 0) & (corner_y < height) & (corner_x >= 0) & (corner_x < width)
            corners.append(torch.where(inside, corner_y * width + corner_x, height * width))
            weights.append(weight_y * weight_x)
    return torch.stack(corners, -1).view(-1, 4), torch.stack(weights, -1).view(-1, 4)


class DeformableConv3x3(nn.Module):
    """
    3x3 deformable convolution: a plain 3x3 convolution (``offset``) predicts the sampling
    offsets (2 per tap) and, when ``modulated`` (DCNv2), a modulation per tap (sigmoid of its
    last 9 channels, the layout of detectron2's and mmcv's modulated layers). Runs through
    ``torchvision.ops.deform_conv2d``, which has CPU and CUDA kernels for forward and backward
    (upstream detectron2's compiled deformable convolutions have no CPU kernels); CPU inference
    (no gradient) through the faster :func:`sampled_deform_conv3x3`, whose result is
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
        if x.device.type == "cpu" and not torch.is_grad_enabled():
            return sampled_deform_conv3x3(x, offset, self.weight, self.bias, mask)
        return deform_conv2d(x, offset, self.weight, self.bias, padding=(1, 1), mask=mask)
