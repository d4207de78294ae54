"""Depthwise convolutions by the C kernel (_depthwise_conv.c) and by ONNX Runtime's grouped Conv
against PyTorch's convolution and by hand, and the layers use_depthwise_kernel and
use_onnxruntime_depthwise_convolutions switch."""

from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.layers import Conv2d
from torch import nn
from torch.nn import functional as F

from panoptic_zoo.acceleration import depthwise_conv
from panoptic_zoo.acceleration.depthwise_conv import (
    KernelDepthwiseConv2d,
    OnnxRuntimeConv2d,
    depthwise_conv2d,
    use_depthwise_kernel,
    use_onnxruntime_depthwise_convolutions,
)
from panoptic_zoo.acceleration.kernels import DEPTHWISE_CONV as _depthwise_conv

pytestmark = pytest.mark.skipif(_depthwise_conv is None, reason="the C kernel is not built")

# Batch 2 and odd sizes; every column path of the kernel: widths below 8 (scalar), 8-63 (vectors
# of 8, the last one overlapping), 64 and more (tiles of 64, the last one overlapping, and
# exactly two tiles); maps smaller than the kernel's reach (taps that only read padding).
SHAPES = [(2, 5, 13, 17), (1, 3, 5, 4), (2, 4, 9, 71), (1, 6, 7, 128), (1, 2, 3, 8)]


@pytest.mark.parametrize("size, dilation", [(3, 1), (3, 2), (3, 12), (5, 1), (5, 3), (7, 2)])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_same_as_conv2d_to_rounding(size, dilation, with_bias, relu, c_kernels):
    torch.manual_seed(size * 100 + dilation)
    for shape in SHAPES:
        channels = shape[1]
        x, weight = torch.randn(shape), torch.randn(channels, 1, size, size)
        bias = torch.randn(channels) if with_bias else None
        expected = F.conv2d(
            x, weight, bias, padding=dilation * (size // 2), dilation=dilation, groups=channels
        )
        if relu:
            expected = F.relu(expected)
        found = depthwise_conv2d(x, weight, bias, dilation, relu=relu)
        assert found.is_contiguous()
        torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-5)


def test_by_hand(c_kernels):
    # One 3x4 plane, a 3x3 filter of ones but -1 at its centre, bias 0.5: each output is the sum
    # of its in-image neighbours minus itself, plus 0.5.
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0, float("nan")]])
    weight = torch.ones(1, 1, 3, 3)
    weight[0, 0, 1, 1] = -1.0
    out = depthwise_conv2d(x.view(1, 1, 3, 4), weight, torch.tensor([0.5]), 1)[0, 0]
    assert out[0, 0].item() == 2 + 5 + 6 - 1 + 0.5  # corner: three neighbours
    assert out[0, 1].item() == 1 + 3 + 5 + 6 + 7 - 2 + 0.5
    assert out[1, 1].item() == 1 + 2 + 3 + 5 + 7 + 9 + 10 + 11 - 6 + 0.5
    assert out[0, 2].item() == 2 + 4 + 6 + 7 + 8 - 3 + 0.5
    # The NaN at (2, 3) reaches its neighbours only.
    assert torch.isnan(out[1:, 2:]).all() and not torch.isnan(out[:, :2]).any()
    assert not torch.isnan(out[0]).any()
    # Dilation 2 on the same plane, filter negated: (1, 1) reads itself and (1, 3); (1, 2)
    # itself and (1, 0); (0, 0) itself, (0, 2), (2, 0) and (2, 2).
    plane = x.view(1, 1, 3, 4)
    out = depthwise_conv2d(plane, -weight, None, 2)[0, 0]
    assert (out[1, 1].item(), out[1, 2].item(), out[0, 0].item()) == (6 - 8, 7 - 5, 1 - 23)
    # With the ReLU: negatives become 0, NaN (read from (2, 3)) stays NaN.
    out = depthwise_conv2d(plane, -weight, None, 2, relu=True)[0, 0]
    assert (out[1, 1].item(), out[1, 2].item(), out[0, 0].item()) == (0, 2, 0)
    assert torch.isnan(out[0, 1]) and torch.isnan(out[2, 1])


def test_bad_arguments_are_rejected():
    x = torch.randn(1, 4, 6, 7)
    with pytest.raises(ValueError, match=r"weight must be \[4, 1, k, k\] with k odd"):
        depthwise_conv2d(x, torch.randn(4, 1, 2, 2), None, 1)
    with pytest.raises(ValueError, match="float32 CPU tensors; x is torch.float64"):
        depthwise_conv2d(x.double(), torch.randn(4, 1, 3, 3), None, 1)
    out = np.empty((1, 4, 6, 7), np.float32)
    weight = np.ones((4, 1, 3, 3), np.float32)
    too_small = np.empty((1, 10), np.float32)
    with pytest.raises(ValueError, match="scratch must be"):
        _depthwise_conv.convolve(x.numpy(), weight, None, out, too_small, 1, False, 1)
    scratch = np.empty((2, 8 * 9), np.float32)
    with pytest.raises(ValueError, match="output must have input's shape"):
        _depthwise_conv.convolve(x.numpy(), weight, None, out[:, :3], scratch, 1, False, 1)
    with pytest.raises(ValueError, match="input must be a C-contiguous float32"):
        _depthwise_conv.convolve(x.double().numpy(), weight, None, out, scratch, 1, False, 1)
    with pytest.raises(ValueError, match="threads must be at least 1"):
        _depthwise_conv.convolve(x.numpy(), weight, None, out, scratch, 1, False, 0)
    with pytest.raises(ValueError, match="dilation must be at least 1"):
        _depthwise_conv.convolve(x.numpy(), weight, None, out, scratch, 0, False, 1)


@pytest.mark.parametrize("groups, stride, dilation", [(6, 1, 1), (6, 2, 1), (3, 1, 2), (1, 1, 1)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_onnxruntime_conv_is_conv2d(groups, stride, dilation, with_bias):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(groups + stride + dilation)
    conv = OnnxRuntimeConv2d(
        6, 6, 5, stride=stride, padding=2 * dilation, dilation=dilation, groups=groups,
        bias=with_bias, norm=nn.BatchNorm2d(6), activation=F.relu,
    ).eval()  # fmt: skip
    with torch.no_grad():
        conv.norm.running_mean.uniform_(-1, 1)
    for shape in [(2, 6, 13, 17), (2, 6, 3, 8)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = F.conv2d(
                x, conv.weight, conv.bias, stride, 2 * dilation, dilation, groups
            )
            found = conv(x)
        torch.testing.assert_close(
            found, F.relu(conv.norm(expected)), rtol=1e-5, atol=1e-5
        )
    assert conv.onnxruntime_node._session is not None


def test_only_same_padded_stride_1_depthwise_layers_are_switched(monkeypatch):
    pytest.importorskip("onnxruntime")
    layers = nn.Sequential(
        # Dilated 3x3 with a norm (not fused: the ReLU runs after it) and an nn.ReLU.
        Conv2d(
            8, 8, 3, padding=6, dilation=6, groups=8, norm=nn.BatchNorm2d(8), activation=nn.ReLU()
        ),
        Conv2d(8, 8, 5, padding=2, groups=8, activation=F.relu),  # 5x5, ReLU fused
        Conv2d(8, 8, 3, padding=1, groups=8, activation=torch.sigmoid),  # other activation
        Conv2d(8, 8, 3, padding=1, stride=2, groups=8),  # stride 2
        Conv2d(8, 8, 3, padding=0, groups=8),  # not "same"
        Conv2d(8, 8, 4, padding=2, groups=8),  # even kernel
        Conv2d(8, 16, 3, padding=2, dilation=2),  # dense
    ).eval()
    with torch.no_grad():
        layers[0].norm.running_mean.uniform_(-1, 1)
        layers[0].norm.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 8, 11, 13)
    with torch.no_grad():
        expected = layers(x)
    state = {k: v.clone() for k, v in layers.state_dict().items()}
    norm = layers[0].norm
    # The C kernel for the dilated layer; ONNX Runtime for the undilated ones.
    assert use_depthwise_kernel(layers) == 1
    assert use_onnxruntime_depthwise_convolutions(layers) == 2
    assert [type(m) for m in layers] == (
        [KernelDepthwiseConv2d] + [OnnxRuntimeConv2d] * 2 + [Conv2d] * 4
    )
    # New modules with the same parameters, norm and state dict; not in training mode.
    assert layers[0].norm is norm and not layers[0].training
    assert state.keys() == layers.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in layers.state_dict().items())
    with torch.no_grad():
        torch.testing.assert_close(layers(x), expected, rtol=1e-5, atol=1e-5)
        # Input oneDNN left channels-last goes to PyTorch's convolution, with the same result.
        torch.testing.assert_close(
            layers(x.contiguous(memory_format=torch.channels_last)), expected, rtol=1e-5, atol=1e-5
        )
    # Training (gradients) keeps PyTorch's convolution.
    layers.train()
    layers(x).sum().backward()
    assert layers[1].weight.grad is not None
    # The criterion is one constant: at 1 every such layer is the C kernel's.
    undilated = Conv2d(8, 8, 5, padding=2, groups=8)
    assert not depthwise_conv.c_kernel_wins(undilated)
    monkeypatch.setattr(depthwise_conv, "C_KERNEL_MIN_DILATION", 1)
    assert depthwise_conv.c_kernel_wins(undilated)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
def test_the_kernel_shares_torchs_openmp_runtime():
    """The C kernel is built with OpenMP and must run on PyTorch's threads: one OpenMP runtime
    in the process, not a second pool of threads that competes with PyTorch's."""
    runtimes = {
        line.split()[-1]
        for line in Path("/proc/self/maps").read_text().splitlines()
        if any(name in line for name in ("libgomp", "libiomp", "libomp"))
    }
    assert len(runtimes) == 1, runtimes
