"""
3x3 deformable convolutions for CPU inference through ONNX Runtime's ``DeformConv``
(:mod:`.onnxruntime_layers`), the fastest path measured for them (docs/ACCELERATION.md);
torchvision's CPU kernel samples in one thread.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.deform_conv import DeformableConv3x3
from .kernels import float32_cpu_or_absent
from .modules import adopt_state, replace_modules
from .onnxruntime_layers import OnnxRuntimeNode, onnxruntime_deform_conv2d

__all__ = ["OnnxRuntimeDeformableConv3x3", "use_onnxruntime_deformable_convolutions"]


class OnnxRuntimeDeformableConv3x3(DeformableConv3x3):
    """:class:`~panoptic_zoo.layers.DeformableConv3x3` that runs CPU inference (no gradient,
    float32) through one ONNX Runtime ``DeformConv`` node, its weights and bias the session's;
    anything else (training, another dtype or device) as its base."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, modulated=False):
        super().__init__(in_channels, out_channels, bias=bias, modulated=modulated)
        self.onnxruntime_node = OnnxRuntimeNode(
            "DeformConv",
            ["X", "W", "offset", "B" if bias else "", "mask" if modulated else ""],
            constants=["W", "B"],
            attributes={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offsets_and_mask(x)
        arguments = (x, self.weight, offset, mask, self.bias)
        if not torch.is_grad_enabled() and all(map(float32_cpu_or_absent, arguments)):
            return onnxruntime_deform_conv2d(*arguments, self.onnxruntime_node.key)
        return super().forward(x)


def _onnxruntime_layer(conv: DeformableConv3x3) -> OnnxRuntimeDeformableConv3x3:
    out_channels, in_channels = conv.weight.shape[:2]
    replacement = OnnxRuntimeDeformableConv3x3(
        in_channels, out_channels, bias=conv.bias is not None, modulated=conv.modulated
    )
    return adopt_state(replacement, conv)


def use_onnxruntime_deformable_convolutions(model: nn.Module) -> int:
    """Replace every :class:`~panoptic_zoo.layers.DeformableConv3x3` of ``model`` by an
    :class:`OnnxRuntimeDeformableConv3x3` with the same parameters, in place; returns how many.
    Needs onnxruntime (:func:`.onnxruntime_layers.onnxruntime_installed`)."""
    return replace_modules(model, lambda m: type(m) is DeformableConv3x3, _onnxruntime_layer)
