"""Panoptic FCN inference pieces on hand-built inputs: candidates, kernel fusion, stuff kernels,
merge; each checked against values computed by hand from the official rules."""

from __future__ import annotations

import torch

from panoptic_zoo.modeling.panoptic_fcn.heads import with_coordinates
from panoptic_zoo.modeling.panoptic_fcn.postprocess import (
    PanopticFCNPostprocessor,
    fuse_kernels,
    pool_stuff_kernels,
    select_thing_candidates,
)


def test_coordinates_are_rows_then_columns():
    coords = with_coordinates(torch.zeros(2, 1, 3, 5))[:, 1:]
    assert coords.shape == (2, 2, 3, 5)
    torch.testing.assert_close(coords[1, 0, :, 4], torch.tensor([-1.0, 0.0, 1.0]))  # row
    torch.testing.assert_close(coords[1, 1, 2], torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))


def test_kernel_fusion_is_class_aware_and_averages_similar_kernels():
    a = torch.tensor([1.0, 0.0, 0.0])
    near_a = torch.tensor([1.0, 0.1, 0.0])  # cosine 0.995 with a
    far = torch.tensor([1.0, 1.0, 0.0])  # cosine 0.707 with a
    kernels = torch.stack([a, far, a, near_a])  # by decreasing score
    scores = torch.tensor([0.9, 0.8, 0.7, 0.5])
    classes = torch.tensor([0, 0, 1, 0])  # the third is a's kernel but another class
    fused, fused_scores, fused_classes = fuse_kernels(kernels, scores, classes, 0.9)
    # a (0.9) absorbs near_a (0.5); far (0.8) and the class-1 copy (0.7) stay alone.
    torch.testing.assert_close(fused_scores, torch.tensor([0.9, 0.8, 0.7]))
    assert fused_classes.tolist() == [0, 0, 1]
    torch.testing.assert_close(fused, torch.stack([(a + near_a) / 2, far, a]))


def test_kernel_fusion_drops_what_joined_a_merged_candidate():
    """Official grouping: c is similar to b only, b to a; b joins a, and c, whose first similar
    candidate is b (not a leader), is dropped rather than kept or fused into a."""
    a = torch.tensor([1.0, 0.0])
    b = torch.tensor([1.0, 0.4])  # cosine 0.928 with a
    c = torch.tensor([1.0, 0.9])  # cosine 0.743 with a, 0.968 with b
    fused, scores, classes = fuse_kernels(
        torch.stack([a, b, c]), torch.tensor([0.9, 0.8, 0.7]), torch.zeros(3, dtype=torch.long),
        0.9,
    )  # fmt: skip
    torch.testing.assert_close(scores, torch.tensor([0.9]))
    torch.testing.assert_close(fused, ((a + b) / 2)[None])


def test_kernel_fusion_of_nothing():
    fused, scores, classes = fuse_kernels(
        torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.9
    )
    assert fused.shape == (0, 4) and scores.numel() == 0 and classes.numel() == 0


def test_candidates_are_smoothed_peaks_above_threshold_by_score_over_levels():
    fine = torch.zeros(2, 5, 5)
    fine[1, 2, 2] = 0.9  # a lone peak of class 1, 3x3 pool: (0.9 + 0.9 / 9) / 2 = 0.5
    fine[0, 0, 0] = 0.08  # (0.08 + 0.08 / 9) / 2 < 0.05 (padding counts in the mean)
    coarse = torch.zeros(2, 3, 3)
    coarse[0, 1, 1] = 1.0  # 5x5 pool: (1 + 1 / 25) / 2 = 0.52
    kernels = [torch.arange(3 * 25.0).view(3, 5, 5), -torch.arange(3 * 9.0).view(3, 3, 3)]
    scores, classes, picked = select_thing_candidates(
        [fine, coarse], kernels, [3, 5], 0.05, top_k=10
    )
    torch.testing.assert_close(scores, torch.tensor([0.52, 0.5]))
    assert classes.tolist() == [0, 1]
    torch.testing.assert_close(picked, torch.stack([kernels[1][:, 1, 1], kernels[0][:, 2, 2]]))
    # A top-k larger than the level (2 x 3 x 3) takes the whole level: its one peak.
    scores, _, _ = select_thing_candidates([coarse], kernels[1:], [5], 0.0, top_k=100)
    torch.testing.assert_close(scores, torch.tensor([0.52]))


def test_stuff_kernels_pool_each_argmax_region_over_the_level_size():
    probs = torch.zeros(3, 2, 2)
    probs[1, 0] = 0.6  # class 1: the top row, mean 0.6
    probs[2, 1, 0] = 0.04  # class 2: bottom left, mean 0.04 <= 0.05
    probs[0, 1, 1] = 0.3  # class 0 ("things"): bottom right
    features = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    pooled, kept = pool_stuff_kernels([probs], [features], 0.05)
    torch.testing.assert_close(pooled, torch.tensor([[[1.0], [0.75], [0.75]]]))
    assert kept.tolist() == [[True, True, False]]


def _postprocessor(**overrides):
    args = dict(
        thing_score_thresh=0.05, stuff_score_thresh=0.05, thing_top_k=10, heatmap_pool_sizes=[3],
        kernel_fusion_thresh=0.9, mask_thresh=0.4, min_score=0.05, instance_score_thresh=0.2,
        overlap_thresh=0.5, stuff_area_limit=4, max_detections=10, encoder_stride=1,
    )  # fmt: skip
    args.update(overrides)
    return PanopticFCNPostprocessor(**args)


def _identity(x):
    return x


def test_one_thing_one_stuff_end_to_end():
    """Encoder channel 0 marks the left half, channel 1 the right half; the thing's kernel picks
    channel 0, the stuff class 2 region's kernels channel 1."""
    h = w = 8
    encoded = torch.zeros(2, h, w)
    encoded[0, :, :4] = 10.0
    encoded[0, :, 4:] = -10.0
    encoded[1] = -encoded[0]
    thing_logits = torch.full((1, h, w), -10.0)
    thing_logits[0, 4, 1] = 10.0
    kernels = torch.zeros(2, h, w)
    kernels[0, :, :4] = 1.0  # thing kernel at (4, 1)
    kernels[1, :, 4:] = 1.0  # stuff kernel of class 2: (0, 32 / 64), logit 5 on the right
    stuff_logits = torch.full((3, h, w), -10.0)  # classes: 0 = things, 1, 2
    stuff_logits[2, :, 4:] = 10.0
    result = _postprocessor()(
        [thing_logits], [stuff_logits], [kernels], [kernels], _identity, encoded, (h, w), (h, w)
    )
    instances = result["instances"]
    assert instances.pred_classes.tolist() == [0]
    assert instances.pred_masks[0, :, :4].all() and not instances.pred_masks[0, :, 4:].any()
    torch.testing.assert_close(instances.pred_boxes.tensor, torch.tensor([[0.0, 0.0, 4.0, 8.0]]))
    panoptic, segments = result["panoptic_seg"]
    assert [(s["isthing"], s["category_id"], s["area"]) for s in segments] == [
        (True, 0, 32),
        (False, 2, 32),
    ]
    assert (panoptic[:, :4] == 1).all() and (panoptic[:, 4:] == 2).all()
    assert result["sem_seg"].shape == (3, h, w)
    torch.testing.assert_close(result["sem_seg"][2, 0, 7], torch.tensor(5.0).sigmoid())
    assert result["sem_seg"][1].max() == 0 and result["sem_seg"][0].max() == 0


def test_rescored_things_below_the_minimum_score_are_dropped():
    """A peak of smoothed score (sigmoid(0) + its 3x3 mean) / 2, rescored by its mask's mean
    probability sigmoid(0.1) = 0.525: kept at MIN_SCORE 0.05, dropped at 0.2."""
    h = w = 4
    encoded = torch.full((1, h, w), 0.1)
    thing_logits = torch.full((1, h, w), -30.0)
    thing_logits[0, 1, 1] = 0.0  # smoothed (0.5 + 0.5 / 9) / 2 = 0.278
    kernels = torch.ones(1, h, w)
    stuff_logits = torch.full((1, h, w), -10.0)
    run = _postprocessor(stuff_area_limit=100)
    args = [[thing_logits], [stuff_logits], [kernels], [kernels], _identity, encoded, (h, w)]
    args.append((h, w))
    expected = (0.5 + 0.5 / 9) / 2 * torch.tensor([0.1]).sigmoid()  # 0.146
    torch.testing.assert_close(run(*args)["instances"].scores, expected)
    assert len(_postprocessor(min_score=0.2)(*args)["instances"]) == 0
    # No stuff class passes its threshold (class 0's mean probability is sigmoid(-10)): no stuff
    # kernel and empty stuff masks, where the official inference fails.
    assert run(*args)["sem_seg"].max() == 0


def test_merge_drops_low_scores_overlaps_and_small_stuff():
    h = w = 8
    encoded = torch.zeros(1, h, w)
    thing_logits = torch.full((1, h, w), -10.0)
    kernels = torch.zeros(1, h, w)
    stuff_logits = torch.full((2, h, w), -10.0)
    stuff_logits[1, :, 7] = 10.0
    result = _postprocessor(stuff_area_limit=100)(
        [thing_logits], [stuff_logits], [kernels], [kernels], _identity, encoded, (h, w), (h, w)
    )
    assert len(result["instances"]) == 0
    assert result["panoptic_seg"][1] == []  # stuff area 64 < 100
    assert (result["panoptic_seg"][0] == 0).all()


def test_stuff_is_the_most_probable_stuff_mask_without_a_threshold():
    """As the official merge: a stuff mask of probability sigmoid(-1) = 0.27 (below the 0.4 mask
    threshold of things) still labels the pixels where it is the most probable one."""
    h = w = 8
    encoded = torch.full((1, h, w), -1.0)
    thing_logits = torch.full((1, h, w), -10.0)
    kernels = torch.ones(1, h, w)
    stuff_logits = torch.full((2, h, w), -10.0)
    stuff_logits[1] = 10.0
    result = _postprocessor()(
        [thing_logits], [stuff_logits], [kernels], [kernels], _identity, encoded, (h, w), (h, w)
    )
    assert result["panoptic_seg"][1] == [{"id": 1, "isthing": False, "category_id": 1, "area": 64}]
