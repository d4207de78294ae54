"""
Depthwise convolutions (stride 1, odd square kernel, "same" zero padding) for CPU inference:
Panoptic-DeepLab's depthwise-separable ASPP (dilated 3x3), decoder and heads (5x5), run by ONNX
Runtime's grouped ``Conv`` (:mod:`.onnxruntime_layers`), the fastest path measured for both
kinds (oneDNN runs them several times slower; tools/kernel_speed.py's table in
docs/ACCELERATION.md).
"""

from __future__ import annotations

import torch
from detectron2.layers import Conv2d
from torch import nn

from .kernels import float32_cpu_or_absent
from .modules import adopt_state, replace_modules
from .onnxruntime_layers import OnnxRuntimeNode, onnxruntime_conv2d

__all__ = [
    "OnnxRuntimeConv2d",
    "is_same_padded_depthwise",
    "use_onnxruntime_depthwise_convolutions",
]


def is_same_padded_depthwise(conv: nn.Module) -> bool:
    """Whether ``conv`` is a detectron2 ``Conv2d`` that the depthwise path takes: depthwise,
    stride 1, an odd square kernel, "same" zero padding."""
    size = conv.kernel_size[0] if isinstance(conv, Conv2d) else None
    return (
        type(conv) is Conv2d
        and conv.groups == conv.in_channels == conv.out_channels
        and conv.kernel_size == (size, size)
        and size % 2 == 1
        and conv.stride == (1, 1)
        and conv.dilation[0] == conv.dilation[1]
        and conv.padding == (conv.dilation[0] * (size // 2),) * 2
        and conv.padding_mode == "zeros"
    )


class OnnxRuntimeConv2d(Conv2d):
    """A detectron2 ``Conv2d`` whose convolution runs, for CPU inference (no gradient,
    float32), as one ONNX Runtime ``Conv`` node (its weights and bias the session's), then its
    norm and activation; anything else as ``Conv2d``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError(f"OnnxRuntimeConv2d takes numeric zero padding; got {self.padding!r}")
        self.onnxruntime_node = OnnxRuntimeNode(
            "Conv",
            ["X", "W", "B" if self.bias is not None else ""],
            constants=["W", "B"],
            attributes={
                "group": self.groups, "kernel_shape": list(self.kernel_size),
                "strides": list(self.stride), "dilations": list(self.dilation),
                "pads": list(self.padding) * 2,
            },
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arguments = (x, self.weight, self.bias)
        if torch.is_grad_enabled() or not all(map(float32_cpu_or_absent, arguments)):
            return super().forward(x)
        x = onnxruntime_conv2d(*arguments, self.onnxruntime_node.key)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def _onnxruntime_convolution(conv: Conv2d) -> OnnxRuntimeConv2d:
    """An :class:`OnnxRuntimeConv2d` of ``conv``'s settings holding its parameters (made on the
    meta device, then adopting them)."""
    like = OnnxRuntimeConv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
        bias=conv.bias is not None, padding_mode=conv.padding_mode, device="meta",
        activation=conv.activation,
    )  # fmt: skip
    return adopt_state(like, conv)


def use_onnxruntime_depthwise_convolutions(model: nn.Module) -> int:
    """Replace every stride-1, "same"-padded depthwise detectron2 ``Conv2d`` of ``model``
    (:func:`is_same_padded_depthwise`) by an :class:`OnnxRuntimeConv2d` with the same parameters
    (and state dict), in place; returns how many. Needs onnxruntime
    (:func:`.onnxruntime_layers.onnxruntime_installed`)."""
    return replace_modules(model, is_same_padded_depthwise, _onnxruntime_convolution)
