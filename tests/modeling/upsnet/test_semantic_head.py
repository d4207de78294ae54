"""UPSNet's semantic head: RoI loss against a hand computation; deformable conv on CPU."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.structures import Boxes

from panoptic_zoo.modeling.upsnet.semantic_head import (
    ConcatenatedLevelsPredictor,
    UPSNetSemanticHead,
    crop_semantic_target,
    semantic_roi_loss,
)


def test_crop_semantic_target_is_opencv_nearest_resize_of_rounded_box():
    gt = torch.arange(16).reshape(4, 4)
    # Inclusive corners (0, 0)-(4, 2): the crop [0, 2) x [0, 4) (clamped), sampled at
    # floor(i * 4 / 2) = 0, 2 across and floor(i * 2 / 2) = 0, 1 down.
    crop = crop_semantic_target(gt, torch.tensor([[0.0, 0.0, 4.0, 2.0]]), 2)
    assert crop.tolist() == [[[0, 2], [4, 6]]]
    # Corners 1.5 -> 2 and 2.5 -> 2 (half to even): an empty side is widened to one pixel.
    crop = crop_semantic_target(gt, torch.tensor([[1.5, 1.5, 2.5, 2.5]]), 2)
    assert crop.tolist() == [[[10, 10], [10, 10]]]


def test_roi_loss_matches_hand_computation():
    # Logits constant in space: class 0 -> 2.0, class 1 -> 0.0 (stride 4, 8x8 -> 32x32 image).
    logits = torch.zeros(1, 2, 8, 8)
    logits[:, 0] = 2.0
    gt = torch.zeros(1, 32, 32, dtype=torch.int64)
    gt[:, :, 16:] = 1  # right half of the box is class 1
    gt[:, 8:12, 8:16] = 255  # a void band: ignored
    box = Boxes(torch.tensor([[8.0, 8.0, 24.0, 24.0]]))
    loss = semantic_roi_loss(logits, gt, [box], stride=4, resolution=4, ignore_value=255)
    # Inclusive corners (8, 8)-(23, 23): the crop [8, 23)^2 sampled at 8 + floor(i * 3.75) =
    # 8, 11, 15, 19 in both directions. Rows 8 and 11 lie in the void band at x = 8, 11, 15
    # (6 ignored pixels, still counted in the mean); x = 19 is class 1, the rest class 0.
    # Class 0 costs log(1 + e^-2), class 1 2 + that.
    base = math.log(1 + math.exp(-2.0))
    expected = (6 * base + 4 * (2.0 + base)) / 16
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)


def test_deformable_head_forward_backward_on_cpu():
    shapes = {f"p{i}": ShapeSpec(channels=8, stride=2**i) for i in range(2, 6)}
    head = UPSNetSemanticHead(shapes, num_stuff_classes=3, num_thing_classes=2, conv_dims=[8, 4, 4])
    features = {f"p{i}": torch.randn(2, 8, 32 // 2**i, 48 // 2**i) for i in range(2, 6)}
    logits = head(features)
    assert logits.shape == (2, 5, 8, 12)
    # Non-zero offsets so the backward really goes through the deformable sampling.
    torch.nn.init.normal_(head.subnetwork[0].offset.weight, std=0.1)
    head(features).logsumexp(dim=1).mean().backward()
    offset_grad = head.subnetwork[0].offset.weight.grad
    assert offset_grad is not None and offset_grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in head.parameters())


def test_predictor_is_the_convolution_of_the_resized_concatenation():
    torch.manual_seed(0)
    predictor = ConcatenatedLevelsPredictor(in_channels=3, levels=3, out_channels=5)
    levels = [torch.randn(2, 3, h, w) for h, w in [(13, 19), (7, 10), (4, 5)]]  # odd sizes
    resized = [F.interpolate(x, size=(13, 19), mode="bilinear", align_corners=False) for x in levels]
    expected = F.conv2d(torch.cat(resized, dim=1), predictor.weight, predictor.bias)
    assert torch.equal(predictor(levels, (13, 19)), expected)
    state = predictor.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == {"weight": (5, 9, 1, 1), "bias": (5,)}
    with pytest.raises(ValueError, match="expected 3 levels, got 1"):
        predictor(levels[:1], (13, 19))
