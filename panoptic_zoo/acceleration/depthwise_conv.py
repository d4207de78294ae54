"""
Depthwise convolutions (stride 1, odd square kernel, "same" zero padding, any dilation) for CPU
inference, in C (``_depthwise_conv.c``): Panoptic-DeepLab's depthwise-separable ASPP (dilated
3x3) and decoder and heads (5x5), which oneDNN runs slowly on NCHW input (measured in
docs/ACCELERATION.md).
"""

from __future__ import annotations

import torch
from detectron2.layers import Conv2d
from torch import nn
from torch.nn import functional as F

from .kernels import DEPTHWISE_CONV, check_float32_cpu, float32_cpu_or_absent
from .modules import adopt_state, replace_modules

__all__ = ["KernelDepthwiseConv2d", "depthwise_conv2d", "use_depthwise_kernel"]


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


def _is_same_padded_depthwise(conv: nn.Module) -> bool:
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


def _kernel_convolution(conv: Conv2d) -> KernelDepthwiseConv2d:
    replacement = KernelDepthwiseConv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
        bias=conv.bias is not None, padding_mode=conv.padding_mode, device="meta",
        activation=conv.activation,
    )  # fmt: skip
    return adopt_state(replacement, conv)


def use_depthwise_kernel(model: nn.Module) -> int:
    """Replace every stride-1, "same"-padded depthwise detectron2 ``Conv2d`` of ``model`` by a
    :class:`KernelDepthwiseConv2d` with the same parameters (and state dict), in place; returns
    how many (0 where the C kernel is not built)."""
    if DEPTHWISE_CONV is None:
        return 0
    return replace_modules(model, _is_same_padded_depthwise, _kernel_convolution)
