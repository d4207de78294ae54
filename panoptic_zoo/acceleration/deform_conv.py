"""
3x3 deformable convolutions for CPU inference, by the fastest path available (measured in
docs/ACCELERATION.md): the project's C kernel (:func:`sampled_deform_conv3x3`: the input sampled
into columns by ``_deform_sampling.c``, then one matrix product), else ONNX Runtime's
``DeformConv`` (:mod:`.onnxruntime_layers`; where the C kernel is not built), else torchvision's
CPU kernel (the plain layer).
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.deform_conv import TAPS, DeformableConv3x3
from .kernels import DEFORM_SAMPLING, check_float32_cpu, float32_cpu_or_absent
from .modules import adopt_state, replace_modules
from .onnxruntime_layers import OnnxRuntimeNode, onnxruntime_deform_conv2d

__all__ = [
    "OnnxRuntimeDeformableConv3x3",
    "SampledDeformableConv3x3",
    "sampled_deform_conv3x3",
    "use_deform_sampling_kernel",
    "use_onnxruntime_deformable_convolutions",
]

# Floats of one chunk of sampled columns (pixels x taps x in channels): 8 MB, which stay in the
# L3 cache between the sampling that writes them and the matrix product that reads them (the
# fastest of 4-32 MB for UPSNet's semantic head, docs/ACCELERATION.md).
_COLUMN_FLOATS = 2**21


@torch.library.custom_op("panoptic_zoo::sampled_deform_conv3x3", mutates_args=())
def sampled_deform_conv3x3(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """
    ``deform_conv2d(x, offset, weight, bias, padding=(1, 1), mask=mask)`` for a 3x3 kernel,
    stride 1, one offset group, float32 CPU tensors, without gradient: for chunks of
    ``_COLUMN_FLOATS`` / (9 x in channels) pixels, a C kernel (``_deform_sampling.c``, on
    PyTorch's OpenMP threads) samples the input at the nine offset positions of each
    pixel into columns (pixels x (taps x in channels)), and one matrix product with the weights
    gives those pixels' outputs: the matrix product of a plain convolution, plus the sampling.
    torchvision's CPU kernel samples in one thread from NCHW planes.

    A custom op (``panoptic_zoo::sampled_deform_conv3x3``), so that traces (fvcore's counts in
    :mod:`panoptic_zoo.benchmark.flops`) see one deformable convolution. The result has shape
    NCHW but channels-last memory (the product writes pixels as rows): a following deformable
    layer then reads its input with no copy; callers that need contiguous NCHW call
    ``.contiguous()``.
    """
    check_float32_cpu(
        "sampled_deform_conv3x3", "torchvision.ops.deform_conv2d",
        x=x, offset=offset, weight=weight, bias=bias, mask=mask,
    )  # fmt: skip
    batch, channels, height, width = x.shape
    out_channels = weight.shape[0]
    pixels = height * width
    if weight.shape != (out_channels, channels, 3, 3):
        raise ValueError(f"weight must be [out, {channels}, 3, 3]; got {list(weight.shape)}")
    # Weights as (tap, in channel) x out channel: the columns' order.
    weight_rows = weight.permute(2, 3, 1, 0).reshape(TAPS * channels, out_channels)
    out = x.new_empty(batch, height, width, out_channels)
    chunk_pixels = max(1, _COLUMN_FLOATS // (TAPS * channels))
    columns = x.new_empty(min(chunk_pixels, pixels), TAPS * channels)
    threads = torch.get_num_threads()
    for image in range(batch):
        # Pixels as rows of channels: no copy when x is channels-last.
        inputs = x[image].permute(1, 2, 0).contiguous().numpy()
        offsets = offset[image].contiguous().numpy()
        masks = None if mask is None else mask[image].contiguous().numpy()
        out_rows = out[image].view(pixels, out_channels)
        for first in range(0, pixels, chunk_pixels):
            count = min(chunk_pixels, pixels - first)
            DEFORM_SAMPLING.sample_columns(
                inputs, offsets, masks, columns[:count].numpy(), first, threads
            )
            if bias is None:
                torch.mm(columns[:count], weight_rows, out=out_rows[first : first + count])
            else:
                torch.addmm(bias, columns[:count], weight_rows, out=out_rows[first : first + count])
    return out.permute(0, 3, 1, 2)


class SampledDeformableConv3x3(DeformableConv3x3):
    """:class:`~panoptic_zoo.layers.DeformableConv3x3` that runs CPU inference (no gradient,
    float32) through :func:`sampled_deform_conv3x3`: its output is then channels-last in memory,
    which a following deformable layer reads with no copy. Anything else as its base."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offsets_and_mask(x)
        arguments = (x, offset, self.weight, self.bias, mask)
        if not torch.is_grad_enabled() and all(map(float32_cpu_or_absent, arguments)):
            return sampled_deform_conv3x3(*arguments)
        return super().forward(x)


def _is_plain(module: nn.Module) -> bool:
    return type(module) is DeformableConv3x3


def _as(layer_type: type[DeformableConv3x3]):
    """A function giving ``conv``'s replacement of ``layer_type``, with its very parameters."""

    def replacement(conv: DeformableConv3x3) -> DeformableConv3x3:
        out_channels, in_channels = conv.weight.shape[:2]
        layer = layer_type(
            in_channels, out_channels, bias=conv.bias is not None, modulated=conv.modulated
        )
        return adopt_state(layer, conv)

    return replacement


def use_deform_sampling_kernel(model: nn.Module) -> int:
    """Replace every :class:`~panoptic_zoo.layers.DeformableConv3x3` of ``model`` by a
    :class:`SampledDeformableConv3x3` with the same parameters, in place; returns how many (0
    where the C kernel is not built)."""
    if DEFORM_SAMPLING is None:
        return 0
    return replace_modules(model, _is_plain, _as(SampledDeformableConv3x3))


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


def use_onnxruntime_deformable_convolutions(model: nn.Module) -> int:
    """Replace every plain :class:`~panoptic_zoo.layers.DeformableConv3x3` of ``model`` (those the
    C kernel has not taken) by an :class:`OnnxRuntimeDeformableConv3x3` with the same
    parameters, in place; returns how many. Needs onnxruntime
    (:func:`.onnxruntime_layers.onnxruntime_installed`)."""
    return replace_modules(model, _is_plain, _as(OnnxRuntimeDeformableConv3x3))
