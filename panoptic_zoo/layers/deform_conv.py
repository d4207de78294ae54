"""3x3 deformable convolution (DCNv1, or DCNv2 with modulation) through torchvision's kernels, or
bilinear sampling and a 1x1 convolution when training on the CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

__all__ = ["DeformableConv3x3", "deform_conv3x3_grid_sample"]

TAPS = 3 * 3


class DeformableConv3x3(nn.Module):
    """
    3x3 deformable convolution: a plain 3x3 convolution (``offset``) predicts the sampling
    offsets (2 per tap) and, when ``modulated`` (DCNv2), a modulation per tap (sigmoid of its
    last 9 channels, the layout of detectron2's and mmcv's modulated layers). Runs through
    ``torchvision.ops.deform_conv2d``, which has CPU and CUDA kernels for forward and backward
    (upstream detectron2's compiled deformable convolutions have no CPU kernels). Training on the
    CPU goes through :func:`deform_conv3x3_grid_sample` instead: the same function, its backward ~7x
    faster than torchvision's CPU backward (docs/methods/upsnet.md).
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, modulated=False):
        super().__init__()
        self.modulated = modulated
        self.offset = nn.Conv2d(in_channels, (3 if modulated else 2) * TAPS, 3, padding=1)
        # Zero offsets (and modulation 0.5) at the start: a regular 3x3 convolution.
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=1)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def offsets_and_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The sampling offsets [N, 18, H, W] predicted from ``x`` and, when modulated, the
        modulation [N, 9, H, W] (else None)."""
        offset = self.offset(x)
        if not self.modulated:
            return offset, None
        return offset[:, : 2 * TAPS], offset[:, 2 * TAPS :].sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offsets_and_mask(x)
        # Exports and inference keep torchvision's op (ONNX DeformConv, the CPU acceleration).
        if not torch.jit.is_scripting() and self.training and x.device.type == "cpu":
            return deform_conv3x3_grid_sample(x, offset, self.weight, self.bias, mask)
        return deform_conv2d(x, offset, self.weight, self.bias, padding=(1, 1), mask=mask)


def deform_conv3x3_grid_sample(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """
    ``deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)`` (stride 1, one group) as
    bilinear sampling of the 9 taps' points with ``grid_sample`` (zeros outside the image, as
    torchvision's kernel) and a 1x1 convolution of the sampled columns [N, C * 9, H, W]. Same
    values up to float rounding; built from ops whose CPU backward is fast. Memory: the columns
    are 9x the input.
    """
    n, c, h, w = x.shape
    rows = torch.arange(h, dtype=x.dtype, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, 1, w)
    taps = torch.arange(TAPS, device=x.device)
    tap_y = (taps // 3 - 1).to(x.dtype).view(1, TAPS, 1, 1)
    tap_x = (taps % 3 - 1).to(x.dtype).view(1, TAPS, 1, 1)
    # torchvision's offset layout: (dy, dx) per tap, taps in row-major order.
    y = rows + tap_y + offset[:, 0::2]
    x_ = cols + tap_x + offset[:, 1::2]
    # Pixel coordinates -> grid_sample's [-1, 1] (align_corners=False: pixel centres).
    grid = torch.stack(((2 * x_ + 1) / w - 1, (2 * y + 1) / h - 1), dim=-1)  # N, 9, H, W, 2
    sampled = F.grid_sample(
        x, grid.view(n, TAPS * h, w, 2), mode="bilinear", padding_mode="zeros", align_corners=False
    ).view(n, c, TAPS, h, w)
    if mask is not None:
        sampled = sampled * mask.unsqueeze(1)
    columns = sampled.reshape(n, c * TAPS, h, w)
    return F.conv2d(columns, weight.reshape(weight.shape[0], c * TAPS, 1, 1), bias)
