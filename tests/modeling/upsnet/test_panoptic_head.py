"""UPSNet's parameter-free panoptic head on hand-built logits."""

from __future__ import annotations

import math

import torch

from panoptic_zoo.modeling.upsnet.meta_arch import subsample_labels
from panoptic_zoo.modeling.upsnet.panoptic_head import (
    mean_cross_entropy,
    panoptic_candidates,
    paste_mask_logits,
    panoptic_logits,
    panoptic_target,
    pixel_boxes,
)
from panoptic_zoo.modeling.upsnet.postprocess import reassign_by_semantic_majority

# 2 stuff classes, 2 thing classes on a 8x8 canvas.
NUM_STUFF = 2


def _semantic_logits() -> torch.Tensor:
    logits = torch.zeros(4, 8, 8)
    logits[0, :4] = 3.0  # stuff 0 on the top half
    logits[1, 4:] = 3.0  # stuff 1 on the bottom half
    logits[2, 1:3, 1:3] = 5.0  # thing 0 where instance 0 is
    logits[3, 5:7, 5:7] = 6.0  # thing 1 at the bottom right, where no instance is
    return logits


def test_instance_logits_are_semantic_plus_mask_inside_box_only():
    boxes = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    pasted = paste_mask_logits(torch.full((1, 4, 4), 2.0), boxes, 8, 8)
    assert torch.equal(pasted[0, 1:3, 1:3], torch.full((2, 2), 2.0))
    assert pasted[0].sum() == 8.0  # zero outside the box
    z = panoptic_logits(_semantic_logits(), NUM_STUFF, boxes, torch.tensor([0]), pasted, True)
    assert z.shape == (NUM_STUFF + 1 + 1, 8, 8)
    assert torch.equal(z[:NUM_STUFF], _semantic_logits()[:NUM_STUFF])
    assert torch.equal(z[2, 1:3, 1:3], torch.full((2, 2), 7.0))  # X_thing 5 + Y 2
    assert z[2].sum() == 28.0


def test_unknown_wins_where_semantic_head_sees_an_unexplained_thing():
    boxes = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    pasted = paste_mask_logits(torch.full((1, 4, 4), 2.0), boxes, 8, 8)
    z = panoptic_logits(_semantic_logits(), NUM_STUFF, boxes, torch.tensor([0]), pasted, True)
    unknown = z[-1]
    # max(X_thing) - max(X_mask): 6 - 0 at the unexplained thing, 5 - 5 inside the instance.
    assert torch.equal(unknown[5:7, 5:7], torch.full((2, 2), 6.0))
    assert torch.equal(unknown[1:3, 1:3], torch.zeros(2, 2))
    winner = z.argmax(dim=0)
    expected = torch.zeros(8, 8, dtype=torch.int64)
    expected[4:] = 1  # stuff 1 (channel 1)
    expected[1:3, 1:3] = 2  # instance 0 (channel S + 0)
    expected[5:7, 5:7] = 3  # unknown (channel S + N)
    assert torch.equal(winner, expected)


def test_no_instances_gives_stuff_and_unknown_channels_only():
    empty = torch.zeros((0, 4))
    pasted = paste_mask_logits(torch.zeros((0, 4, 4)), empty, 8, 8)
    z = panoptic_logits(_semantic_logits(), NUM_STUFF, empty, torch.zeros(0, dtype=torch.long),
                        pasted, True)  # fmt: skip
    assert z.shape == (NUM_STUFF + 1, 8, 8)
    assert torch.equal(z[-1], _semantic_logits()[NUM_STUFF:].max(dim=0).values)


def _target_inputs():
    semantic = torch.full((4, 4), 255)
    semantic[0] = 0  # stuff 0
    semantic[1] = 1  # stuff 1
    semantic[2:] = 2  # thing 0: instance 0 left, instance 1 right
    semantic[3, 3] = 3  # a crowd thing-1 pixel, no instance
    semantic[1, 3] = 255  # void
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, 2:, :2] = True
    masks[1, 2:, 2:3] = True
    return semantic, masks


def test_panoptic_target_sends_thing_pixels_without_a_kept_instance_to_unknown():
    """Official: dropped instance 1 and the crowd pixel target unknown (channel S + 1)."""
    semantic, masks = _target_inputs()
    target = panoptic_target(semantic, NUM_STUFF, masks[:1], True, -1)
    expected = torch.tensor([[0, 0, 0, 0], [1, 1, 1, -1], [2, 2, 3, 3], [2, 2, 3, 3]])
    assert torch.equal(target, expected)


def test_panoptic_target_without_unknown_ignores_thing_pixels_without_instance():
    semantic, masks = _target_inputs()
    target = panoptic_target(semantic, NUM_STUFF, masks, False, -1)
    expected = torch.tensor([[0, 0, 0, 0], [1, 1, 1, -1], [2, 2, 3, -1], [2, 2, 3, -1]])
    assert torch.equal(target, expected)


def test_semantic_majority_turns_instances_into_stuff():
    """Classes: stuff 0, 1; things 2, 3. Instance 0: 3 of 4 pixels stuff 1 -> stuff (id 2).
    Instance 1: 2 of 4 stuff 0 (half, tie with thing 3 broken to the lowest) -> stuff (id 1).
    Instance 2: majority its thing class -> stays. Instance 3: stuff 0 on 1 of 3 -> stays."""
    semantic = torch.tensor([[1, 1, 1, 2], [0, 0, 3, 3], [2, 2, 0, 0], [0, 3, 3, 0]])
    instance_index = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, -1], [3, 3, 3, -1]])
    stuff_classes = torch.zeros_like(semantic)
    stuff_classes[2:, 3] = 1
    reassign_by_semantic_majority(semantic, 4, 4, NUM_STUFF, stuff_classes, instance_index)
    assert instance_index.tolist() == [[-1] * 4, [-1] * 4, [2, 2, 2, -1], [3, 3, 3, -1]]
    assert stuff_classes.tolist() == [[2] * 4, [1] * 4, [0, 0, 0, 1], [0, 0, 0, 1]]


def test_semantic_majority_without_instances_changes_nothing():
    semantic = torch.zeros(2, 3, dtype=torch.long)
    instance_index = torch.full((2, 3), -1)
    stuff_classes = torch.ones(2, 3, dtype=torch.long)
    reassign_by_semantic_majority(semantic, 4, 0, NUM_STUFF, stuff_classes, instance_index)
    assert (instance_index == -1).all() and (stuff_classes == 1).all()


def test_panoptic_candidates_take_every_proposal_class_pair_then_one_agnostic_nms():
    """3 proposals x 2 classes (background last). Pairs above 0.6: (0, c1) 0.9, (1, c0) 0.7,
    (1, c1) 0.65, (2, c0) 0.61. Proposals 0 and 1 overlap (IoU 0.9 > 0.5): one NMS across
    classes keeps (0, c1) and drops both pairs of proposal 1; proposal 2 is apart. The top 2."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0], [20.0, 20.0, 30.0, 34.0]])
    scores = torch.tensor([[0.05, 0.9, 0.05], [0.7, 0.65, 0.0], [0.61, 0.2, 0.19]])
    kept_boxes, kept_scores, classes = panoptic_candidates(
        boxes.repeat(1, 2), scores, (32, 40), 0.6, 0.5, 2
    )
    assert classes.tolist() == [1, 0]
    assert torch.equal(kept_scores, torch.tensor([0.9, 0.61]))
    # Clipped to the image (32 rows): the far corner of proposal 2 moves from 34 to 32.
    assert torch.equal(kept_boxes, torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 32.0]]))
    none = panoptic_candidates(boxes.repeat(1, 2), scores, (32, 40), 0.95, 0.5, 2)
    assert all(len(x) == 0 for x in none)
    no_proposals = panoptic_candidates(torch.zeros(0, 8), torch.zeros(0, 3), (32, 40), 0.6, 0.5, 2)
    assert all(len(x) == 0 for x in no_proposals)
    # Class-agnostic regression: one box per proposal for every class.
    _, _, classes = panoptic_candidates(boxes, scores, (32, 40), 0.6, 0.5, 2)
    assert classes.tolist() == [1, 0]


def test_subsample_labels_keeps_the_top_left_pixel_of_each_cell_and_rounds_the_size():
    labels = torch.arange(8 * 12).reshape(8, 12)
    # A 6 x 10 image padded to 8 x 12: round(6 / 4) = 2 rows (half to even: 1.5 -> 2),
    # round(10 / 4) = 2 columns (2.5 -> 2); the rest is fill.
    sampled = subsample_labels(labels, (6, 10), 4, -1)
    assert sampled.tolist() == [[0, 4, -1], [48, 52, -1]]
    sampled = subsample_labels(labels, (7, 11), 4, -1)  # 1.75 -> 2, 2.75 -> 3
    assert sampled.tolist() == [[0, 4, 8], [48, 52, 56]]


def test_mean_cross_entropy_counts_ignored_pixels():
    logits = torch.zeros(1, 2, 1, 4)  # log 2 per labelled pixel
    target = torch.tensor([[[0, 1, -1, -1]]])
    loss = mean_cross_entropy(logits, target, -1)
    assert torch.isclose(loss, torch.tensor(2 * math.log(2) / 4))


def test_pixel_boxes_round_like_the_official_code():
    """Official box = far corner - 1, scaled; mask box: corners truncated; semantic box: far
    corner rounded half to even. Both returned with the far corner one past the box."""
    boxes = torch.tensor([[9.0, 3.5, 39.0, 31.0]])
    # Scaled official box (2.25, 0.875, 9.5, 7.5).
    mask_boxes, semantic_boxes = pixel_boxes(boxes, 1 / 4)
    assert mask_boxes.tolist() == [[2.0, 0.0, 10.0, 8.0]]
    assert semantic_boxes.tolist() == [[2.0, 0.0, 11.0, 9.0]]  # 9.5 -> 10, 7.5 -> 8
    # Official box (0, 0, 11.5, 13.5): 11.5 -> 12, 13.5 -> 14 (half to even).
    mask_boxes, semantic_boxes = pixel_boxes(torch.tensor([[0.0, 0.0, 12.5, 14.5]]), 1.0)
    assert mask_boxes.tolist() == [[0.0, 0.0, 12.0, 14.0]]
    assert semantic_boxes.tolist() == [[0.0, 0.0, 13.0, 15.0]]
