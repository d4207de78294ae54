"""Panoptic FCN targets on hand-built masks and its losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from panoptic_zoo.modeling.panoptic_fcn.losses import (
    dice_loss,
    sigmoid_focal_loss,
    weighted_dice_loss,
)
from panoptic_zoo.modeling.panoptic_fcn.targets import PanopticFCNTargetGenerator, gaussian_radius

IGNORE = 255


def _generator(**overrides):
    args = dict(
        num_thing_classes=3, num_stuff_classes=2, level_strides=[8, 16],
        instance_scales=[(1, 12), (8, 64)], encoder_stride=4, min_overlap=0.7,
        ignore_value=IGNORE,
    )  # fmt: skip
    args.update(overrides)
    return PanopticFCNTargetGenerator(**args)


def _box_mask(height, width, top, left, size_y, size_x):
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[top : top + size_y, left : left + size_x] = True
    return mask


def test_levels_follow_sqrt_area_and_centers_are_mass_centers():
    small = _box_mask(64, 64, 8, 8, 4, 9)  # area 36 -> sqrt 6: level 0 only
    both = _box_mask(64, 64, 16, 24, 10, 10)  # sqrt 10: in both ranges (they overlap)
    large = _box_mask(64, 64, 0, 0, 32, 32)  # sqrt 32: level 1 only
    # An L shape: its mass center is not its box center.
    ell = torch.zeros(64, 64, dtype=torch.bool)
    ell[40:56, 40:44] = True
    ell[52:56, 44:56] = True  # area 64 + 48 = 112 -> sqrt 10.6: both levels
    masks = torch.stack([small, both, large, ell])
    classes = torch.tensor([0, 1, 2, 1])
    sem = torch.full((64, 64), 1)
    targets = _generator()(masks, classes, sem, [(8, 8), (4, 4)], (16, 16))

    level0, level1 = targets.assignments
    assert level0.instance.tolist() == [0, 1, 3]
    assert level1.instance.tolist() == [1, 2, 3]
    # small: rows 8..11, cols 8..16 -> mass center (10, 12.5) px -> cell (1, 1) at stride 8.
    assert level0.center_yx[0].tolist() == [1, 1]
    # L: mean row = (16*4*(40+55)/2 + 4*12*53.5)/112 + 0.5 ... computed from the pixels.
    ys, xs = ell.nonzero(as_tuple=True)
    cy, cx = ys.float().mean() + 0.5, xs.float().mean() + 0.5
    assert level1.center_yx[2].tolist() == [int(cy / 16), int(cx / 16)]
    assert level0.center_yx[2].tolist() == [int(cy / 8), int(cx / 8)]
    # Peaks of 1 on each assigned thing's class channel, at its center.
    for level, assignment in enumerate(targets.assignments):
        heatmap = targets.thing_heatmaps[level]
        for cls, (y, x) in zip(assignment.classes.tolist(), assignment.center_yx.tolist()):
            assert heatmap[cls, y, x] == 1.0
    assert targets.thing_heatmaps[0][2].max() == 0  # class 2 (large) is not on level 0


def test_gaussian_radius_and_values():
    # A 10x10 box at level stride 1: CornerNet's three cases, the smallest wins.
    h = w = torch.tensor([10.0])
    r = gaussian_radius(h, w, 0.7).item()
    m = 0.7
    r3 = (-2 * m * 20 + math.sqrt((2 * m * 20) ** 2 - 4 * 4 * m * (m - 1) * 100)) / 2
    r1 = (20 + math.sqrt(400 - 4 * 100 * 0.3 / 1.7)) / 2
    r2 = (40 + math.sqrt(1600 - 16 * 0.3 * 100)) / 2
    assert math.isclose(r, min(r1, r2, r3), rel_tol=1e-6)

    mask = _box_mask(32, 32, 0, 0, 20, 20)  # sqrt(area) 20: level 0, box 20x20 px = 20 cells
    targets = _generator(level_strides=[1], instance_scales=[(1, 64)])(
        mask[None], torch.tensor([0]), torch.ones(32, 32, dtype=torch.long), [(32, 32)], (8, 8)
    )
    radius = int(gaussian_radius(torch.tensor([20.0]), torch.tensor([20.0]), 0.7))
    assert targets.assignments[0].radius.tolist() == [radius]
    heat = targets.thing_heatmaps[0][0]
    sigma = (2 * radius + 1) / 6
    cy = cx = 10  # mass center 10.0 px (pixels 0..19 + 0.5)
    assert math.isclose(heat[cy, cx + 1].item(), math.exp(-1 / (2 * sigma**2)), rel_tol=1e-5)
    assert heat[cy, cx + radius] > 0 and heat[cy, cx + radius + 1] == 0


def test_stuff_and_mask_targets_are_area_averages():
    sem = torch.zeros(8, 8, dtype=torch.long)  # things (class 0) on the left half
    sem[:, 4:] = 2
    sem[:2, :] = IGNORE
    masks = _box_mask(8, 8, 2, 0, 6, 4)[None]
    targets = _generator(level_strides=[4], instance_scales=[(1, 64)])(
        masks, torch.tensor([0]), sem, [(2, 2)], (2, 2)
    )
    assert targets.stuff_classes.tolist() == [0, 2]
    # Top cells: half void rows -> class fractions 0.5, valid fraction 0.5.
    torch.testing.assert_close(targets.stuff_valid[0], torch.tensor([[0.5, 0.5], [1.0, 1.0]]))
    torch.testing.assert_close(targets.stuff_maps[0][2], torch.tensor([[0.0, 0.5], [0.0, 1.0]]))
    torch.testing.assert_close(targets.stuff_maps[0][1], torch.zeros(2, 2))
    torch.testing.assert_close(targets.thing_masks[0], torch.tensor([[0.5, 0.0], [1.0, 0.0]]))


def test_focal_loss_hand_computed():
    logits = torch.tensor([0.0, 2.0])
    targets = torch.tensor([1.0, 0.0])
    loss = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0, reduction="none")
    p = 1 / (1 + math.exp(-2.0))
    expected = [0.25 * 0.5**2 * math.log(2), 0.75 * p**2 * -math.log(1 - p)]
    torch.testing.assert_close(loss, torch.tensor(expected))


def test_weighted_dice_hand_computed():
    target = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    perfect = target.clone()
    half = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # inter 1, sum p^2 2, sum t^2 2
    probs = torch.stack([perfect, half])[None]  # one object, k = 2
    dice = dice_loss(probs, target[None, None])
    torch.testing.assert_close(dice, torch.tensor([[0.0, 1 - (2 + 1e-5) / (4 + 1e-5)]]))
    weights = torch.tensor([[0.75, 0.25]])
    loss = weighted_dice_loss(probs, target[None], weights)
    torch.testing.assert_close(loss, 0.25 * dice[0, 1])


def test_labels_beyond_the_configured_classes_are_clear_errors():
    mask = _box_mask(16, 16, 0, 0, 4, 4)[None]
    sem = torch.full((16, 16), 3)  # stuff ids are 1..2 here
    with pytest.raises(ValueError, match="NUM_STUFF_CLASSES"):
        _generator()(mask, torch.tensor([0]), sem, [(2, 2), (1, 1)], (4, 4))
    with pytest.raises(ValueError, match="NUM_THING_CLASSES"):
        _generator()(mask, torch.tensor([3]), sem.clamp(max=2), [(2, 2), (1, 1)], (4, 4))
