"""UPSNet's parameter-free panoptic head on hand-built logits."""

from __future__ import annotations

import torch

from panoptic_zoo.modeling.upsnet.meta_arch import reassign_by_semantic_majority
from panoptic_zoo.modeling.upsnet.panoptic_head import (
    paste_mask_logits,
    panoptic_logits,
    panoptic_target,
)

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
