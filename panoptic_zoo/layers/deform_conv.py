"""
3x3 deformable convolution (DCNv1, or DCNv2 with modulation): torchvision's kernels, and for
CPU inference a faster equivalent (:func:`sampled_deform_conv3x3`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import deform_conv2d

from ..utils.chunks import row_chunks

__all__ = ["DeformableConv3x3", "sampled_deform_conv3x3"]

_TAPS = 3 * 3
# Tap k of the 3x3 kernel (row-major) looks at (y + dy, x + dx), before its learned offset.
_TAP_DY = (-1, -1, -1, 0, 0, 0, 1, 1, 1)
_TAP_DX = (-1, 0, 1, -1, 0, 1, -1, 0, 1)
# Floats of sampled input (pixels x taps x channels) per chunk of output rows.
_SAMPLED_FLOATS_PER_CHUNK = 8 * 2**20


def sampled_deform_conv3x3(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """
    ``deform_conv2d(x, offset, weight, bias, padding=(1, 1), mask=mask)`` for a 3x3 kernel,
    stride 1, one offset group, as a gather and a matrix product. Each tap's input is bilinear
    in four pixels, which hold all channels contiguously in a channels-last copy of ``x``:
    ``F.embedding_bag`` blends those rows with the bilinear weights (times the modulation),
    with torchvision's rules (corners outside the image read zero), and one GEMM applies the
    weights, in chunks of output rows. On 2 CPU threads at FPN sizes this is ~6x faster than
    torchvision's kernel, which samples in one thread; equal to it up to float rounding.
    """
    batch, channels, height, width = x.shape
    offset = offset.view(batch, _TAPS, 2, height, width)
    rows = torch.arange(height, dtype=x.dtype, device=x.device).view(1, 1, height, 1)
    columns = torch.arange(width, dtype=x.dtype, device=x.device).view(1, 1, 1, width)
    tap_dy = torch.tensor(_TAP_DY, dtype=x.dtype, device=x.device).view(1, _TAPS, 1, 1)
    tap_dx = torch.tensor(_TAP_DX, dtype=x.dtype, device=x.device).view(1, _TAPS, 1, 1)
    # Sampling positions, per pixel and tap (channels-last order: pixel, then tap).
    sample_y = (rows + tap_dy + offset[:, :, 0]).permute(0, 2, 3, 1)
    sample_x = (columns + tap_dx + offset[:, :, 1]).permute(0, 2, 3, 1)
    modulation = None if mask is None else mask.permute(0, 2, 3, 1)
    # Weights in (tap, channel) order, as the gathered columns.
    weight = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], _TAPS * channels).t()
    out = x.new_empty(batch, height, width, weight.shape[1])
    for image in range(batch):
        # Pixels as rows of channels, and a zero row (index height * width) for the outside:
        # one copy of the image.
        pixels = x.new_empty(height * width + 1, channels)
        pixels[:-1].view(height, width, channels).copy_(x[image].permute(1, 2, 0))
        pixels[-1] = 0
        for chunk in row_chunks(height, _TAPS * channels * width, _SAMPLED_FLOATS_PER_CHUNK):
            corners, corner_weights = _bilinear_corners(
                sample_y[image, chunk], sample_x[image, chunk], height, width
            )
            if modulation is not None:
                corner_weights = corner_weights * modulation[image, chunk].reshape(-1, 1)
            sampled = F.embedding_bag(
                corners, pixels, per_sample_weights=corner_weights, mode="sum"
            )
            out[image, chunk] = (sampled.view(-1, _TAPS * channels) @ weight).view(
                -1, width, weight.shape[1]
            )
    if bias is not None:
        out += bias
    # NCHW, as torchvision returns: a channels-last result would carry its strides downstream.
    return out.permute(0, 3, 1, 2).contiguous()


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
    (no gradient) through the faster :func:`sampled_deform_conv3x3`.
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
