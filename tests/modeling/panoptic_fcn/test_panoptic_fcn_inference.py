"""Panoptic FCN inference pieces on hand-built inputs: candidates, kernel fusion, merge."""

from __future__ import annotations

import torch

from panoptic_zoo.modeling.panoptic_fcn.inference import (
    PanopticFCNInference,
    fuse_kernels,
    select_thing_candidates,
)


def test_kernel_fusion_is_class_aware_and_averages_similar_kernels():
    a = torch.tensor([1.0, 0.0, 0.0])
    near_a = torch.tensor([1.0, 0.1, 0.0])  # cosine 0.995 with a
    far = torch.tensor([1.0, 1.0, 0.0])  # cosine 0.707 with a
    kernels = torch.stack([near_a, a, far, a])
    scores = torch.tensor([0.5, 0.9, 0.8, 0.7])
    classes = torch.tensor([0, 0, 0, 1])  # the last is a's kernel but another class
    fused, fused_scores, fused_classes = fuse_kernels(kernels, scores, classes, 0.9)
    # a (0.9) absorbs near_a (0.5); far (0.8) and the class-1 copy (0.7) stay alone.
    torch.testing.assert_close(fused_scores, torch.tensor([0.9, 0.8, 0.7]))
    assert fused_classes.tolist() == [0, 0, 1]
    torch.testing.assert_close(fused, torch.stack([(a + near_a) / 2, far, a]))


def test_kernel_fusion_of_nothing():
    fused, scores, classes = fuse_kernels(
        torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.9
    )
    assert fused.shape == (0, 4) and scores.numel() == 0 and classes.numel() == 0


def test_candidates_are_smoothed_peaks_above_threshold():
    probs = torch.zeros(2, 5, 5)
    probs[1, 2, 2] = 0.9  # a lone peak of class 1: smoothed to (0.9 + 0.9 / 9) / 2 = 0.5
    probs[0, 0, 0] = 0.08  # (0.08 + 0.08 / 9) / 2 < 0.05 (padding counts in the 3x3 mean)
    kernels = torch.arange(3 * 25, dtype=torch.float32).view(3, 5, 5)
    scores, classes, picked = select_thing_candidates([probs], [kernels], 0.05, top_k=10)
    assert classes.tolist() == [1]
    torch.testing.assert_close(scores, torch.tensor([0.5]))
    torch.testing.assert_close(picked, kernels[:, 2, 2][None])


def _inference(**overrides):
    args = dict(
        thing_score_thresh=0.05, stuff_score_thresh=0.05, thing_top_k=10,
        kernel_fusion_thresh=0.9, mask_thresh=0.4, instance_score_thresh=0.2,
        overlap_thresh=0.5, stuff_area_limit=4, max_detections=10, encoder_stride=1,
    )  # fmt: skip
    args.update(overrides)
    return PanopticFCNInference(**args)


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
    kernels[1, :, 4:] = 1.0  # stuff kernels on the right
    stuff_logits = torch.full((3, h, w), -10.0)  # classes: 0 = things, 1, 2
    stuff_logits[2, :, 4:] = 10.0
    result = _inference()(
        [thing_logits], stuff_logits, [kernels], kernels, encoded, (h, w), (h, w)
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
    assert result["sem_seg"][2, 0, 7] > 0.99 and result["sem_seg"][1].max() == 0


def test_merge_drops_low_scores_overlaps_and_small_stuff():
    h = w = 8
    encoded = torch.zeros(1, h, w)
    thing_logits = torch.full((1, h, w), -10.0)
    kernels = torch.zeros(1, h, w)
    stuff_logits = torch.full((2, h, w), -10.0)
    stuff_logits[1, :, 7] = 10.0
    # Masks of probability sigmoid(0) = 0.5 > 0.4 everywhere: score x 0.5 after rescoring.
    result = _inference(stuff_area_limit=100)(
        [thing_logits], stuff_logits, [kernels], kernels, encoded, (h, w), (h, w)
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
    result = _inference()([thing_logits], stuff_logits, [kernels], kernels, encoded, (h, w), (h, w))
    assert result["panoptic_seg"][1] == [{"id": 1, "isthing": False, "category_id": 1, "area": 64}]
