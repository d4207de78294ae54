"""3x3 deformable convolution (DCNv1, or DCNv2 with modulation) through torchvision's kernels."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import deform_conv2d

__all__ = ["DeformableConv3x3"]

TAPS = 3 * 3


class DeformableConv3x3(nn.Module):
    """
    3x3 deformable convolution: a plain 3x3 convolution (``offset``) predicts the sampling
    offsets (2 per tap) and, when ``modulated`` (DCNv2), a modulation per tap (sigmoid of its
    last 9 channels, the layout of detectron2's and mmcv's modulated layers). Runs through
    ``torchvision.ops.deform_conv2d``, which has CPU and CUDA kernels for forward and backward
    (upstream detectron2's compiled deformable convolutions have no CPU kernels).
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
        return deform_conv2d(x, offset, self.weight, self.bias, padding=(1, 1), mask=mask)
