"""UPSNet's semantic head: RoI loss against a hand computation; deformable conv on CPU."""

from __future__ import annotations

import math

import torch
from detectron2.layers import ShapeSpec
from detectron2.structures import Boxes

from panoptic_zoo.modeling.upsnet.semantic_head import (
    UPSNetSemanticHead,
    crop_semantic_target,
    semantic_roi_loss,
)


def test_crop_semantic_target_is_nearest_resize_of_box():
    gt = torch.arange(16).reshape(4, 4)
    crop = crop_semantic_target(gt, torch.tensor([[0.0, 0.0, 4.0, 2.0]]), 2)
    assert crop.tolist() == [[[1, 3], [5, 7]]]  # rows 0-1 at x = 1, 3


def test_roi_loss_matches_hand_computation():
    # Logits constant in space: class 0 -> 2.0, class 1 -> 0.0 (stride 4, 8x8 -> 32x32 image).
    logits = torch.zeros(1, 2, 8, 8)
    logits[:, 0] = 2.0
    gt = torch.zeros(1, 32, 32, dtype=torch.int64)
    gt[:, :, 16:] = 1  # right half of the box is class 1
    gt[:, 8:12, 8:16] = 255  # a void band: ignored
    box = Boxes(torch.tensor([[8.0, 8.0, 24.0, 24.0]]))
    loss = semantic_roi_loss(logits, gt, [box], stride=4, resolution=4, ignore_value=255)
    # 4x4 grid: row 0 samples y=10 (void band on the left half): 2 ignored, 2 of class 1;
    # rows 1-3: 2 of class 0 and 2 of class 1. Class 0 costs log(1 + e^-2), class 1 2 + that.
    base = math.log(1 + math.exp(-2.0))
    expected = (6 * base + 8 * (2.0 + base)) / 14
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
