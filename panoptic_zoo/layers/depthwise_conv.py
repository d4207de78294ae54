"""
Dilated 3x3 depthwise convolutions (Panoptic-DeepLab's depthwise-separable ASPP) for CPU
inference, as nine shifted multiply-adds.

oneDNN runs a dilated depthwise convolution on NCHW input at ~5 GFLOP/s: 2048 channels at 50x84
(an 800x1333 image at stride 16) took ~35 ms per call, 6 calls per image. Nine ``addcmul_``
passes over channel chunks that stay in cache take ~14 ms. Undilated depthwise convolutions
are left to oneDNN, which is fast for them.
"""

from __future__ import annotations

import torch
from detectron2.layers import Conv2d
from torch import nn

from ..utils.chunks import row_chunks

__all__ = ["ShiftedDepthwiseConv2d", "dilated_depthwise_conv3x3", "use_shifted_depthwise"]

# Floats of one channel chunk (input and output together stay within ~8 MiB of cache).
_CHUNK_FLOATS = 2**20


def dilated_depthwise_conv3x3(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int
) -> torch.Tensor:
    """
    ``F.conv2d(x, weight, bias, padding=dilation, dilation=dilation, groups=C)`` for NCHW ``x``
    with C channels and a ``[C, 1, 3, 3]`` ``weight``, up to float rounding: each tap adds its
    shifted input, times its per-channel weight, to the output rows and columns it reaches.
    """
    _, channels, height, width = x.shape
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    for chunk in row_chunks(channels, height * width, _CHUNK_FLOATS):
        taps = weight[chunk, 0]  # [c, 3, 3]
        source, target = x[:, chunk], out[:, chunk]
        center = taps[:, 1, 1].view(1, -1, 1, 1)
        if bias is None:
            torch.mul(source, center, out=target)
        else:
            torch.addcmul(bias[chunk].view(1, -1, 1, 1), source, center, out=target)
        for row in range(3):
            for column in range(3):
                dy, dx = (row - 1) * dilation, (column - 1) * dilation
                if (dy, dx) == (0, 0) or abs(dy) >= height or abs(dx) >= width:
                    continue  # the center, or a tap that only ever reads padding
                # Output pixel (y, x) reads input (y + dy, x + dx) where that is inside.
                out_rows, in_rows = _overlap(height, dy)
                out_columns, in_columns = _overlap(width, dx)
                target[:, :, out_rows, out_columns].addcmul_(
                    source[:, :, in_rows, in_columns], taps[:, row, column].view(1, -1, 1, 1)
                )
    return out


def _overlap(length: int, shift: int) -> tuple[slice, slice]:
    """Output and input positions (i, i + shift) that are both in ``[0, length)``."""
    before, after = max(0, -shift), max(0, shift)
    return slice(before, length - after), slice(after, length - before)


class ShiftedDepthwiseConv2d(Conv2d):
    """A detectron2 ``Conv2d`` that is a dilated 3x3 depthwise convolution: CPU inference (no
    gradient) through :func:`dilated_depthwise_conv3x3`, anything else as ``Conv2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or torch.is_grad_enabled():
            return super().forward(x)
        x = dilated_depthwise_conv3x3(x, self.weight, self.bias, self.dilation[0])
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def _is_dilated_depthwise_3x3(conv: nn.Module) -> bool:
    return (
        type(conv) is Conv2d
        and conv.groups == conv.in_channels == conv.out_channels
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.dilation[0] == conv.dilation[1] > 1
        and conv.padding == conv.dilation
        and conv.padding_mode == "zeros"
    )


def use_shifted_depthwise(model: nn.Module) -> int:
    """Make every dilated 3x3 depthwise detectron2 ``Conv2d`` of ``model`` a
    :class:`ShiftedDepthwiseConv2d` (same parameters and state dict), in place; returns how
    many."""
    convolutions = [m for m in model.modules() if _is_dilated_depthwise_3x3(m)]
    for conv in convolutions:
        conv.__class__ = ShiftedDepthwiseConv2d
    return len(convolutions)
