"""Convolutions by ONNX Runtime's grouped Conv (OnnxRuntimeConv2d) against PyTorch's
convolution, and the layers use_onnxruntime_depthwise_convolutions switches."""

import pytest
import torch
from detectron2.layers import Conv2d
from torch import nn
from torch.nn import functional as F

from panoptic_zoo.acceleration.depthwise_conv import (
    OnnxRuntimeConv2d,
    use_onnxruntime_depthwise_convolutions,
)

pytest.importorskip("onnxruntime")


# Depthwise 5x5 and 3x3 (Panoptic-DeepLab's), undilated and dilated, the largest reaching past
# the smaller map; grouped and dense ones; stride 2.
@pytest.mark.parametrize(
    "size, groups, stride, dilation",
    [(5, 6, 1, 1), (3, 6, 1, 3), (3, 6, 1, 12), (5, 6, 2, 1), (5, 3, 1, 2), (5, 1, 1, 1)],
)
@pytest.mark.parametrize("with_bias", [True, False])
def test_onnxruntime_conv_is_conv2d(size, groups, stride, dilation, with_bias):
    torch.manual_seed(size + groups + stride + dilation)
    padding = dilation * (size // 2)
    conv = OnnxRuntimeConv2d(
        6, 6, size, stride=stride, padding=padding, dilation=dilation, groups=groups,
        bias=with_bias, norm=nn.BatchNorm2d(6), activation=F.relu,
    ).eval()  # fmt: skip
    with torch.no_grad():
        conv.norm.running_mean.uniform_(-1, 1)
    for shape in [(2, 6, 13, 17), (2, 6, 3, 8)]:
        x = torch.randn(shape)
        with torch.no_grad():
            expected = F.conv2d(x, conv.weight, conv.bias, stride, padding, dilation, groups)
            found = conv(x)
        torch.testing.assert_close(found, F.relu(conv.norm(expected)), rtol=1e-5, atol=1e-5)
    assert conv.onnxruntime_node._session is not None


@torch.no_grad()
def test_by_hand():
    # One 3x4 plane, a 3x3 filter of ones but -1 at its centre, bias 0.5: each output is the sum
    # of its in-image neighbours minus itself, plus 0.5.
    plane = torch.arange(1.0, 13.0).view(1, 1, 3, 4)
    conv = OnnxRuntimeConv2d(1, 1, 3, padding=1).eval()
    conv.weight.fill_(1.0)
    conv.weight[0, 0, 1, 1] = -1.0
    conv.bias.fill_(0.5)
    out = conv(plane)[0, 0]
    assert out[0, 0].item() == 2 + 5 + 6 - 1 + 0.5  # corner: three neighbours
    assert out[0, 1].item() == 1 + 3 + 5 + 6 + 7 - 2 + 0.5
    assert out[1, 1].item() == 1 + 2 + 3 + 5 + 7 + 9 + 10 + 11 - 6 + 0.5
    # Dilation 2, filter negated, no bias: (1, 1) reads itself and (1, 3); (1, 2) itself and
    # (1, 0); (0, 0) itself, (0, 2), (2, 0) and (2, 2). Then with a ReLU: negatives become 0.
    for activation, expected in ((None, (6 - 8, 7 - 5, 1 - 23)), (F.relu, (0, 2, 0))):
        dilated = OnnxRuntimeConv2d(
            1, 1, 3, padding=2, dilation=2, bias=False, activation=activation
        ).eval()
        dilated.weight.copy_(-conv.weight)
        out = dilated(plane)[0, 0]
        assert (out[1, 1].item(), out[1, 2].item(), out[0, 0].item()) == expected


def test_only_same_padded_stride_1_depthwise_layers_are_switched():
    layers = nn.Sequential(
        # Dilated 3x3 with a norm (the ReLU runs after it) and an nn.ReLU.
        Conv2d(
            8, 8, 3, padding=6, dilation=6, groups=8, norm=nn.BatchNorm2d(8), activation=nn.ReLU()
        ),
        Conv2d(8, 8, 5, padding=2, groups=8, activation=F.relu),  # 5x5
        Conv2d(8, 8, 3, padding=1, groups=8, activation=torch.sigmoid),  # another activation
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
    # ONNX Runtime for the dilated layer and the undilated ones alike.
    assert use_onnxruntime_depthwise_convolutions(layers) == 3
    assert [type(m) for m in layers] == [OnnxRuntimeConv2d] * 3 + [Conv2d] * 4
    # New modules with the same parameters, norm and state dict; not in training mode.
    assert layers[0].norm is norm and not layers[0].training
    assert state.keys() == layers.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in layers.state_dict().items())
    with torch.no_grad():
        torch.testing.assert_close(layers(x), expected, rtol=1e-5, atol=1e-5)
        # Input oneDNN left channels-last gives the same result.
        torch.testing.assert_close(
            layers(x.contiguous(memory_format=torch.channels_last)), expected, rtol=1e-5, atol=1e-5
        )
    # Training (gradients) keeps PyTorch's convolution.
    layers.train()
    layers(x).sum().backward()
    assert layers[0].weight.grad is not None and layers[1].weight.grad is not None
