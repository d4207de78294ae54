"""
Depthwise convolutions (stride 1, odd square kernel, "same" zero padding) for CPU inference:
Panoptic-DeepLab's depthwise-separable ASPP (dilated 3x3), decoder and heads (5x5). Each layer
goes to the faster of two paths (:func:`c_kernel_wins`, docs/ACCELERATION.md): the C kernel
(``_depthwise_conv.c``; oneDNN runs dilated depthwise layers slowly) or, where the C kernel is
not 1.3x faster than the best library path, ONNX Runtime's grouped ``Conv``
(:mod:`.onnxruntime_layers`).
"""

from __future__ import annotations

import torch
from detectron2.layers import Conv2d
from torch import nn
from torch.nn import functional as F

from .kernels import DEPTHWISE_CONV, check_float32_cpu, float32_cpu_or_absent
from .modules import adopt_state, replace_modules
from .onnxruntime_layers import OnnxRuntimeNode, onnxruntime_conv2d

__all__ = [
    "C_KERNEL_MIN_DILATION",
    "KernelDepthwiseConv2d",
    "OnnxRuntimeConv2d",
    "c_kernel_wins",
    "depthwise_conv2d",
    "is_same_padded_depthwise",
    "use_depthwise_kernel",
    "use_onnxruntime_depthwise_convolutions",
]

# The depthwise C kernel is kept for the layers of at least this dilation: on the benchmark
# configs it beats the best library path by >= 1.3x on ASPP's dilated 3x3 layers, not on the
# undilated 5x5 ones (tools/kernel_speed.py's table in docs/ACCELERATION.md). 1: every layer.
C_KERNEL_MIN_DILATION = 2


@torch.library.custom_op("panoptic_zoo::depthwise_conv2d", mutates_args=())
def depthwise_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    dilation: int,
    relu: bool = False,
) -> torch.Tensor:
    """
    ``F.conv2d(x, weight, bias, padding=dilation * (k // 2), dilation=dilation, groups=C)``, then
    ``F.relu`` when ``relu``, up to float rounding, for float32 CPU tensors: NCHW ``x`` with C
    channels and a ``[C, 1, k, k]`` ``weight``, k odd. Runs on PyTorch's OpenMP threads.

    A custom op (``panoptic_zoo::depthwise_conv2d``), so that traces (fvcore's counts in
    :mod:`panoptic_zoo.benchmark.flops`) see one convolution.
    """
    check_float32_cpu(
        "depthwise_conv2d", "torch.nn.functional.conv2d", x=x, weight=weight, bias=bias
    )
    batch, channels, height, width = x.shape
    size = weight.shape[-1]
    if weight.shape != (channels, 1, size, size) or size % 2 != 1:
        raise ValueError(
            f"weight must be [{channels}, 1, k, k] with k odd; got {list(weight.shape)}"
        )
    reach = dilation * (size // 2)
    threads = torch.get_num_threads()
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    scratch = x.new_empty(threads, (height + 2 * reach) * (width + 2 * reach))
    DEPTHWISE_CONV.convolve(
        x.contiguous().numpy(),
        weight.contiguous().numpy(),
        None if bias is None else bias.contiguous().numpy(),
        out.numpy(),
        scratch.numpy(),
        dilation,
        relu,
        threads,
    )
    return out


def _is_relu(activation) -> bool:
    return activation is F.relu or type(activation) is nn.ReLU


class KernelDepthwiseConv2d(Conv2d):
    """A detectron2 ``Conv2d`` that is a stride-1 depthwise convolution with "same" padding: CPU
    inference (no gradient, float32, NCHW-contiguous input) through :func:`depthwise_conv2d`,
    with its ReLU in the same pass when it has no norm (norms folded); anything else as
    ``Conv2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arguments = (x, self.weight, self.bias)
        if (
            torch.is_grad_enabled()
            or not x.is_contiguous()
            or not all(map(float32_cpu_or_absent, arguments))
        ):
            return super().forward(x)
        fuse_relu = self.norm is None and _is_relu(self.activation)
        x = depthwise_conv2d(x, self.weight, self.bias, self.dilation[0], relu=fuse_relu)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None and not fuse_relu:
            x = self.activation(x)
        return x


def is_same_padded_depthwise(conv: nn.Module) -> bool:
    """Whether ``conv`` is a detectron2 ``Conv2d`` that the depthwise paths take: depthwise,
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


def c_kernel_wins(conv: nn.Module) -> bool:
    """Whether a stride-1, "same"-padded depthwise ``conv`` runs on the C kernel (dilation at
    least :data:`C_KERNEL_MIN_DILATION`) rather than on a library path."""
    return is_same_padded_depthwise(conv) and conv.dilation[0] >= C_KERNEL_MIN_DILATION


def _like(layer_type: type[Conv2d], conv: Conv2d) -> Conv2d:
    """A ``layer_type`` of ``conv``'s settings, its parameters on the meta device (to adopt)."""
    return layer_type(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
        bias=conv.bias is not None, padding_mode=conv.padding_mode, device="meta",
        activation=conv.activation,
    )  # fmt: skip


def _kernel_convolution(conv: Conv2d) -> KernelDepthwiseConv2d:
    return adopt_state(_like(KernelDepthwiseConv2d, conv), conv)


def use_depthwise_kernel(model: nn.Module) -> int:
    """Replace every stride-1, "same"-padded depthwise detectron2 ``Conv2d`` of ``model`` that
    :func:`c_kernel_wins` for by a :class:`KernelDepthwiseConv2d` with the same parameters (and
    state dict), in place; returns how many (0 where the C kernel is not built)."""
    if DEPTHWISE_CONV is None:
        return 0
    return replace_modules(model, c_kernel_wins, _kernel_convolution)


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
    return adopt_state(_like(OnnxRuntimeConv2d, conv), conv)


def use_onnxruntime_depthwise_convolutions(model: nn.Module) -> int:
    """Replace every stride-1, "same"-padded depthwise detectron2 ``Conv2d`` of ``model`` that
    :func:`c_kernel_wins` not for by an :class:`OnnxRuntimeConv2d` with the same parameters, in
    place; returns how many. Needs onnxruntime
    (:func:`.onnxruntime_layers.onnxruntime_installed`)."""
    return replace_modules(
        model,
        lambda m: is_same_padded_depthwise(m) and not c_kernel_wins(m),
        _onnxruntime_convolution,
    )
