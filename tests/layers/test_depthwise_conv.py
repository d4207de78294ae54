"""Dilated depthwise convolution by shifted multiply-adds against PyTorch's convolution."""

import pytest
import torch
from detectron2.layers import Conv2d
from torch.nn import functional as F

from panoptic_zoo.layers.depthwise_conv import (
    ShiftedDepthwiseConv2d,
    dilated_depthwise_conv3x3,
    use_shifted_depthwise,
)


@pytest.mark.parametrize("dilation", [2, 6, 12])
@pytest.mark.parametrize("with_bias", [True, False])
def test_same_as_conv2d_to_rounding(dilation, with_bias):
    torch.manual_seed(dilation)
    # Odd sizes; maps smaller than the dilation (taps that only read padding); many channels
    # (several chunks); batch 2.
    for shape in [(2, 5, 13, 17), (1, 3, 5, 4), (2, 600, 41, 53)]:
        channels = shape[1]
        x, weight = torch.randn(shape), torch.randn(channels, 1, 3, 3)
        bias = torch.randn(channels) if with_bias else None
        expected = F.conv2d(x, weight, bias, padding=dilation, dilation=dilation, groups=channels)
        found = dilated_depthwise_conv3x3(x, weight, bias, dilation)
        torch.testing.assert_close(found, expected, rtol=1e-5, atol=1e-5)


def test_only_dilated_depthwise_3x3_layers_are_switched():
    layers = torch.nn.Sequential(
        Conv2d(8, 8, 3, padding=6, dilation=6, groups=8, norm=torch.nn.BatchNorm2d(8),
               activation=F.relu),  # fmt: skip
        Conv2d(8, 8, 3, padding=1, groups=8),  # not dilated
        Conv2d(8, 8, 5, padding=4, dilation=2, groups=8),  # 5x5
        Conv2d(8, 16, 3, padding=2, dilation=2),  # dense
    ).eval()
    x = torch.randn(2, 8, 11, 9)
    with torch.no_grad():
        expected = layers(x)
    assert use_shifted_depthwise(layers) == 1
    assert [type(m) for m in layers] == [ShiftedDepthwiseConv2d, Conv2d, Conv2d, Conv2d]
    with torch.no_grad():
        torch.testing.assert_close(layers(x), expected, rtol=1e-5, atol=1e-5)
    # Training (gradients) keeps PyTorch's convolution.
    layers.train()
    layers(x).sum().backward()
    assert layers[0].weight.grad is not None
