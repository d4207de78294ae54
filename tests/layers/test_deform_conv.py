"""The shared deformable convolution: its CPU inference path against torchvision's kernel."""

import pytest
import torch
from torchvision.ops import deform_conv2d

from panoptic_zoo.layers import DeformableConv3x3, deform_conv
from panoptic_zoo.layers.deform_conv import sampled_deform_conv3x3


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("shape", [(2, 5, 9, 13), (1, 3, 1, 7), (1, 4, 6, 1), (2, 6, 31, 17)])
@pytest.mark.parametrize("table_floats", [None, 1])
def test_gather_path_is_torchvision_deform_conv(shape, modulated, table_floats, monkeypatch):
    if table_floats is not None:  # one tap per table
        monkeypatch.setattr(deform_conv, "_TABLE_FLOATS", table_floats)
    torch.manual_seed(sum(shape))
    batch, channels, height, width = shape
    x = torch.randn(shape)
    # Offsets up to a few pixels: taps land between pixels, on borders and outside the image.
    offset = torch.randn(batch, 18, height, width) * 3
    offset[0, 0, 0, 0] = 0.0  # an integer position: a corner weight of exactly 1
    weight, bias = torch.randn(7, channels, 3, 3), torch.randn(7)
    mask = torch.rand(batch, 9, height, width) if modulated else None
    expected = deform_conv2d(x, offset, weight, bias, padding=(1, 1), mask=mask)
    got = sampled_deform_conv3x3(x, offset, weight, bias, mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        sampled_deform_conv3x3(x, offset, weight, None, mask), expected - bias.view(1, -1, 1, 1),
        rtol=1e-5, atol=1e-5,
    )  # fmt: skip
    # Channels-last input (what a previous deformable layer returns) reads the same.
    channels_last = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(
        sampled_deform_conv3x3(channels_last, offset, weight, bias, mask), expected,
        rtol=1e-5, atol=1e-5,
    )  # fmt: skip


def test_table_groups_taps_within_its_budget(monkeypatch):
    monkeypatch.setattr(deform_conv, "_TABLE_FLOATS", 3 * 4 * 36)
    assert deform_conv._tap_groups(36, 4) == [slice(0, 3), slice(3, 6), slice(6, 9)]
    monkeypatch.setattr(deform_conv, "_TABLE_FLOATS", 7 * 4 * 36)  # 7 fit: 2 groups, 5 + 4
    assert deform_conv._tap_groups(36, 4) == [slice(0, 5), slice(5, 9)]
    monkeypatch.setattr(deform_conv, "_TABLE_FLOATS", 1)  # never less than one tap
    assert deform_conv._tap_groups(36, 4) == [slice(k, k + 1) for k in range(9)]
    monkeypatch.setattr(deform_conv, "_TABLE_FLOATS", 2**30)
    assert deform_conv._tap_groups(36, 4) == [slice(0, 9)]


def test_module_uses_the_gather_path_only_without_gradients(monkeypatch):
    calls = []
    monkeypatch.setattr(
        deform_conv, "sampled_deform_conv3x3",
        lambda *args: calls.append(1) or sampled_deform_conv3x3(*args),
    )  # fmt: skip
    torch.manual_seed(0)
    layer = DeformableConv3x3(4, 6, modulated=True)
    torch.nn.init.normal_(layer.offset.weight, std=0.5)  # nonzero offsets and modulation
    x = torch.randn(2, 4, 11, 9, requires_grad=True)
    trained = layer(x)  # torchvision, with its backward
    trained.sum().backward()
    assert x.grad is not None and not calls
    with torch.no_grad():
        inferred = layer(x)
    assert calls
    torch.testing.assert_close(inferred, trained.detach(), rtol=1e-5, atol=1e-5)
