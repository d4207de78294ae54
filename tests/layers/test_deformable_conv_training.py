"""DeformableConv3x3's CPU training path (bilinear sampling + 1x1 convolution) against
torchvision's deform_conv2d: same outputs and gradients, odd sizes, batch 2, points outside."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import deform_conv2d

from panoptic_zoo.layers.deform_conv import DeformableConv3x3, deform_conv3x3_grid_sample


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 7, 5), (2, 4, 1, 9), (1, 2, 6, 1)])
def test_sampled_path_equals_torchvision_with_gradients(shape, modulated, bias):
    generator = torch.Generator().manual_seed(sum(shape))
    n, c, h, w = shape
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    # Offsets of a few pixels: points between pixels, outside the image and across its edge. (Not
    # exactly on a pixel: bilinear sampling has a kink there, each op takes one side's gradient.)
    offset = torch.randn((n, 18, h, w), generator=generator, dtype=torch.float64) * 2.5
    weight = torch.randn((5, c, 3, 3), generator=generator, dtype=torch.float64)
    b = torch.randn(5, generator=generator, dtype=torch.float64) if bias else None
    mask = torch.rand((n, 9, h, w), generator=generator, dtype=torch.float64) if modulated else None
    ops = {
        "torchvision": lambda *a: deform_conv2d(*a[:4], padding=(1, 1), mask=a[4]),
        "sampled": deform_conv3x3_grid_sample,
    }
    outputs = {}
    for name, op in ops.items():
        leaves = [t.clone().requires_grad_() if t is not None else None
                  for t in (x, offset, weight, b, mask)]  # fmt: skip
        y = op(*leaves)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        outputs[name] = [y.detach()] + [t.grad for t in leaves if t is not None]
    for expected, actual in zip(outputs["torchvision"], outputs["sampled"]):
        torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)


def test_layer_trains_on_the_sampled_path_and_infers_with_torchvision(monkeypatch):
    layer = DeformableConv3x3(3, 4, modulated=True)
    torch.nn.init.normal_(layer.offset.weight, std=0.5)
    x = torch.randn(2, 3, 9, 11)
    calls = []
    monkeypatch.setattr(
        "panoptic_zoo.layers.deform_conv.deform_conv3x3_grid_sample",
        lambda *a: calls.append("sampled") or deform_conv3x3_grid_sample(*a),
    )
    trained = layer.train()(x)
    inferred = layer.eval()(x)
    assert calls == ["sampled"]
    torch.testing.assert_close(trained, inferred, rtol=1e-5, atol=1e-5)
