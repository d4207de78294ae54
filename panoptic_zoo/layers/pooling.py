"""
Stride-1 window pooling with large windows. Panoptic-DeepLab's COCO setting pools 41 x 41
windows (center NMS, 800x1333) and 40 x 40 ones (ASPP image pooling at 1/16); PyTorch's CPU
kernels are slow at windows this large. A window's maximum is taken along rows,
then columns, each by doubling (max of two shifted maxima: ~log2(k) passes), ~60x faster; its
mean as two matrix products with 0/1 band matrices, along rows then columns (~8x faster than
pooling columns then rows with PyTorch's kernel, ~60x faster than the direct one).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

__all__ = ["window_max", "window_mean"]

# Below this window area the direct kernel is about as fast, and exact.
SEPARABLE_MEAN_AREA = 100


def window_max(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """
    ``F.max_pool2d(x, kernel_size, stride=1, padding=(kernel_size - 1) // 2)`` for an odd
    ``kernel_size``, exactly (a window's maximum is the maximum of its columns' maxima).
    """
    if kernel_size % 2 == 0:
        raise ValueError(f"window_max needs an odd kernel_size to keep the size, got {kernel_size}")
    return _sliding_max(_sliding_max(x, kernel_size, -2), kernel_size, -1)


def _sliding_max(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Maximum over the ``size`` entries centered on each entry along ``dim`` (-inf beyond)."""
    pad = (size - 1) // 2
    padding = [0, 0] * (-dim - 1) + [pad, pad]  # F.pad lists the last dimension first
    maxima, span = F.pad(x, padding, value=-math.inf), 1  # maxima[i]: max of [i, i + span)
    while 2 * span <= size:
        length = maxima.shape[dim] - span
        maxima = torch.maximum(maxima.narrow(dim, 0, length), maxima.narrow(dim, span, length))
        span *= 2
    if span < size:  # two overlapping spans cover the window
        length = maxima.shape[dim] - (size - span)
        maxima = torch.maximum(
            maxima.narrow(dim, 0, length), maxima.narrow(dim, size - span, length)
        )
    return maxima


def window_mean(x: torch.Tensor, kernel_size: tuple[int, int]) -> torch.Tensor:
    """
    ``F.avg_pool2d(x, kernel_size, stride=1)`` (no padding). Windows of more than
    ``SEPARABLE_MEAN_AREA`` pixels whose outputs cover more than one position are summed along
    rows, then columns, by matrix products: equal up to float rounding (the sums run in another
    order). Others (small windows; one window over the whole map, as a training crop gives)
    directly, bit for bit.
    """
    kernel_area = kernel_size[0] * kernel_size[1]
    if kernel_area <= SEPARABLE_MEAN_AREA or tuple(kernel_size) == tuple(x.shape[-2:]):
        return F.avg_pool2d(x, kernel_size, stride=1)
    *batch, height, width = x.shape
    row_sums = x.reshape(-1, width) @ _window_band(width, kernel_size[1], x).t()
    sums = _window_band(height, kernel_size[0], x) @ row_sums.view(*batch, height, -1)
    return sums.div_(kernel_area)


def _window_band(length: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """(length - size + 1) x length matrix of ones where column j is in window i (j - i in
    [0, size)), zeros elsewhere, of ``like``'s dtype and device."""
    windows = torch.arange(length - size + 1, device=like.device).unsqueeze(1)
    positions = torch.arange(length, device=like.device).unsqueeze(0)
    return ((positions >= windows) & (positions < windows + size)).to(like.dtype)
