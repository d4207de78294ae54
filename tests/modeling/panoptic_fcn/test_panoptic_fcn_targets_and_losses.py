"""
Panoptic FCN targets on hand-built masks and its losses against hand-computed values (the
official rules; tests/modeling/panoptic_fcn/test_panoptic_fcn_training_golden.py checks them
against the official code's own outputs).

At encoder stride 4 on a size divisible by 4, bilinear resampling (align_corners=False) gives
each cell the mean of the 2 x 2 pixels at its center: rows and columns 4i+1 and 4i+2.
"""

from __future__ import annotations

import math

import pytest
import torch
from panoptic_zoo.modeling.panoptic_fcn.losses import (
    PanopticFCNLoss,
    dice_loss,
    sigmoid_focal_loss,
    weighted_dice_loss,
)
from panoptic_zoo.modeling.panoptic_fcn.targets import PanopticFCNTargetGenerator, gaussian_radius

IGNORE = 255


def _generator(**overrides):
    args = dict(
        num_thing_classes=3, num_stuff_classes=2, level_strides=[4, 16],
        instance_scales=[(1, 16), (12, 64)], encoder_stride=4, min_overlap=0.7,
        ignore_value=IGNORE,
    )  # fmt: skip
    args.update(overrides)
    return PanopticFCNTargetGenerator(**args)


def _box_mask(height, width, top, left, size_y, size_x):
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[top : top + size_y, left : left + size_x] = True
    return mask


def _boxes(masks):
    """(x0, y0, x1, y1) boxes of masks, as the mapper's BitMasks.get_bounding_boxes."""
    out = []
    for m in masks:
        ys, xs = m.nonzero(as_tuple=True)
        out.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 4)


def _targets(generator, masks, classes, sem, padded, level_sizes, encoder_size):
    return generator(masks, _boxes(masks), classes, sem, padded, level_sizes, encoder_size)


def test_levels_follow_sqrt_box_area_and_centers_come_from_the_stride_4_mask():
    small = _box_mask(64, 64, 8, 8, 4, 9)  # box 4 x 9 -> sqrt 6: level 0 only
    large = _box_mask(64, 64, 0, 20, 32, 32)  # sqrt 32: level 1 only
    # An L in a 16 x 16 box: sqrt(box area) 16 is in both ranges; sqrt(mask area) 10.6 would
    # be in level 0's only.
    ell = torch.zeros(64, 64, dtype=torch.bool)
    ell[40:56, 40:44] = True
    ell[52:56, 44:56] = True
    masks = torch.stack([small, ell, large])
    classes = torch.tensor([0, 1, 2])
    sem = torch.full((64, 64), 1)
    # Level 0 at the encoder's own size (16 x 16), level 1 at stride 16 (4 x 4).
    targets = _targets(_generator(), masks, classes, sem, (64, 64), [(16, 16), (4, 4)], (16, 16))

    level0, level1 = targets.assignments
    assert level0.instance.tolist() == [0, 1]
    assert level1.instance.tolist() == [1, 2]
    # The L at stride 4: cells (10..13, 10) and (13, 11..13) are above 0 -> mass center
    # (85 / 7, 76 / 7) = (12.14, 10.86) cells, truncated. (The full-resolution mass center,
    # (50.07, 44.93) px, would give column 11.)
    assert level0.center_yx[1].tolist() == [12, 10]
    assert level1.center_yx[0].tolist() == [int(85 / 7 / 4), int(76 / 7 / 4)]
    # small: rows 8..11 -> cells 2 (rows 9, 10); cols 8..16 -> cells 2, 3 (cols 9..14);
    # cell 4 (cols 17, 18) is empty -> center (2, 2.5) -> cell (2, 2).
    assert level0.center_yx[0].tolist() == [2, 2]
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

    # Box 20 x 20 px on a 32 x 32 level of a 32 x 32 input: 20 x 20 cells.
    mask = _box_mask(32, 32, 0, 0, 20, 20)
    generator = _generator(level_strides=[1], instance_scales=[(1, 64)])
    targets = _targets(
        generator, mask[None], torch.tensor([0]), torch.ones(32, 32, dtype=torch.long),
        (32, 32), [(32, 32)], (8, 8),
    )  # fmt: skip
    radius = int(gaussian_radius(torch.tensor([20.0]), torch.tensor([20.0]), 0.7))
    assert radius >= 2
    assert targets.assignments[0].radius.tolist() == [radius]
    heat = targets.thing_heatmaps[0][0]
    sigma = (2 * radius + 1) / 3
    # Stride-4 cells 0..4 are inside (pixels up to 18), cell 5 (pixels 21, 22) is not: center
    # cell 2 -> level cell 8.
    cy = cx = 8
    assert heat[cy, cx] == 1.0
    assert math.isclose(heat[cy, cx + 1].item(), math.exp(-1 / (2 * sigma**2)), rel_tol=1e-6)
    assert math.isclose(heat[cy + 1, cx + 1].item(), math.exp(-2 / (2 * sigma**2)), rel_tol=1e-6)
    assert heat[cy, cx + radius] > 0 and heat[cy, cx + radius + 1] == 0


def test_stuff_and_mask_targets_are_stride_4_resamplings_with_positives_from_half():
    sem = torch.zeros(8, 8, dtype=torch.long)  # things (class 0) on the left half
    sem[:, 4:] = 2
    sem[:2, :] = IGNORE
    sem[5, 5] = 1
    masks = _box_mask(8, 8, 2, 0, 6, 4)[None]
    # Padded to 12 x 12: encoder and level 3 x 3, the last row and column padding.
    targets = _targets(
        _generator(level_strides=[4], instance_scales=[(1, 64)]),
        masks, torch.tensor([0]), sem, (12, 12), [(3, 3)], (3, 3),
    )  # fmt: skip
    pad = lambda rows: torch.nn.functional.pad(torch.tensor(rows), (0, 1, 0, 1))  # noqa: E731
    # Top cells: centre rows 1 (void: negative for every class) and 2. Bottom-right cell:
    # pixel (5, 5) is class 1, the other three class 2.
    torch.testing.assert_close(targets.stuff_masks[0], pad([[0.5, 0.0], [1.0, 0.0]]))
    torch.testing.assert_close(targets.stuff_masks[1], pad([[0.0, 0.0], [0.0, 0.25]]))
    torch.testing.assert_close(targets.stuff_masks[2], pad([[0.0, 0.5], [0.0, 0.75]]))
    # Position targets: fractions >= 0.5 kept as they are, the rest 0.
    torch.testing.assert_close(targets.stuff_maps[0][0], pad([[0.5, 0.0], [1.0, 0.0]]))
    torch.testing.assert_close(targets.stuff_maps[0][1], torch.zeros(3, 3))
    torch.testing.assert_close(targets.stuff_maps[0][2], pad([[0.0, 0.5], [0.0, 0.75]]))
    assert targets.stuff_classes[0].tolist() == [0, 2]
    torch.testing.assert_close(targets.thing_masks[0], pad([[0.5, 0.0], [1.0, 0.0]]))


def test_images_without_things_and_things_lost_at_stride_4():
    sem = torch.full((20, 24), 1)
    generator = _generator()
    empty = torch.zeros(0, 20, 24, dtype=torch.bool)
    targets = generator(
        empty, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), sem, (32, 32),
        [(8, 8), (2, 2)], (8, 8),
    )  # fmt: skip
    assert all(len(a.instance) == 0 for a in targets.assignments)
    assert all(h.max() == 0 for h in targets.thing_heatmaps)
    assert targets.thing_masks.shape == (0, 8, 8)
    # The losses of such an image: no thing term, the stuff terms as usual.
    sizes = [(8, 8), (2, 2)]
    losses = _criterion(7)(
        [torch.zeros(1, 3, *s) for s in sizes], [torch.zeros(1, 3, *s) for s in sizes],
        [torch.ones(1, 4, *s) for s in sizes], [torch.ones(1, 4, *s) for s in sizes],
        lambda pooled: pooled, torch.ones(1, 4, 8, 8), [targets],
    )  # fmt: skip
    assert losses["loss_seg_things"] == 0
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_seg_stuff"] > 0
    # A 1-pixel thing on row and column 0 has no stride-4 cell above 0 (cells sample pixels
    # 1 and 2): it is left out (the official code casts its NaN center to cell 0).
    dot = _box_mask(20, 24, 0, 0, 1, 1)[None]
    targets = _targets(generator, dot, torch.tensor([1]), sem, (32, 32), [(8, 8), (2, 2)], (8, 8))
    assert targets.thing_masks.max() == 0
    assert all(len(a.instance) == 0 for a in targets.assignments)


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
    torch.testing.assert_close(dice, torch.tensor([[0.0, 0.5]]))
    weights = torch.tensor([[0.75, 0.25]])
    loss = weighted_dice_loss(probs, target[None], weights)
    torch.testing.assert_close(loss, 0.25 * dice[0, 1])
    # Empty prediction and target: 1, not NaN (the denominator is bounded below).
    assert dice_loss(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)).item() == 1.0


def _criterion(top_k):
    return PanopticFCNLoss(
        focal_alpha=0.25, focal_gamma=2.0, position_weight=1.0, segment_weight=3.0,
        top_k_points=top_k,
    )  # fmt: skip


def test_segment_losses_on_a_level_smaller_than_k_and_the_heatmap_gradient():
    """One thing on a 2 x 2 level with k = 7 (the official code's top-k fails there): its
    kernels are the level's cells its resampled mask covers, weighted by their scores."""
    # A 16 x 16 image, things class 0 in the top 8 rows: stride-4 mask rows 0, 1 (of 4).
    mask = _box_mask(16, 16, 0, 0, 8, 16)
    sem = torch.zeros(16, 16, dtype=torch.long)
    sem[8:] = 1
    generator = _generator(num_thing_classes=1, level_strides=[8], instance_scales=[(1, 64)])
    targets = _targets(generator, mask[None], torch.tensor([0]), sem, (16, 16), [(2, 2)], (4, 4))
    # Resampled to the level, the mask is 1 on the top row and 0 on the bottom one.
    thing_logits = torch.tensor([[[[0.5, -1.0], [2.0, 0.0]]]], requires_grad=True)
    kernels = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]]]])  # C = 1
    encoded = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    stuff_logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    losses = _criterion(7)(
        [thing_logits], [stuff_logits], [kernels], [kernels], lambda pooled: pooled + 0.1,
        encoded, [targets],
    )  # fmt: skip

    scores = torch.sigmoid(torch.tensor([0.5, -1.0]))
    weights = scores / scores.sum()
    target = targets.thing_masks[0]
    expected = 0.0
    for weight, kernel in zip(weights, [1.0, -2.0]):
        p = torch.sigmoid(kernel * encoded[0, 0])
        expected += weight * (1 - 2 * (p * target).sum() / ((p * p).sum() + (target**2).sum()))
    torch.testing.assert_close(losses["loss_seg_things"], 3 * expected)
    # Stuff: class 0 (things) on the top row of the level, class 1 on the bottom one; each
    # kernel is embed(sum over its row / 4), the embedding here adding 0.1 once.
    assert targets.stuff_classes[0].tolist() == [0, 1]
    expected = 0.0
    for cls, kernel in [(0, (1.0 - 2.0) / 4 + 0.1), (1, (3.0 + 0.5) / 4 + 0.1)]:
        p = torch.sigmoid(kernel * encoded[0, 0])
        target = targets.stuff_masks[cls]
        expected += 1 - 2 * (p * target).sum() / ((p * p).sum() + (target**2).sum())
    torch.testing.assert_close(losses["loss_seg_stuff"], 3 * expected / 2)
    # Not detached: the segment loss reaches the scores of the chosen cells, and only those.
    thing_logits.grad = None
    losses["loss_seg_things"].backward()
    grad = thing_logits.grad[0, 0]
    assert grad[0, 0] != 0 and grad[0, 1] != 0
    assert grad[1, 0] == 0 and grad[1, 1] == 0


def test_labels_beyond_the_configured_classes_are_clear_errors():
    mask = _box_mask(16, 16, 0, 0, 4, 4)[None]
    sem = torch.full((16, 16), 3)  # stuff ids are 1..2 here
    levels = [(2, 2), (1, 1)]
    with pytest.raises(ValueError, match="NUM_STUFF_CLASSES"):
        _targets(_generator(), mask, torch.tensor([0]), sem, (16, 16), levels, (4, 4))
    with pytest.raises(ValueError, match="NUM_THING_CLASSES"):
        _targets(_generator(), mask, torch.tensor([3]), sem.clamp(max=2), (16, 16), levels, (4, 4))
