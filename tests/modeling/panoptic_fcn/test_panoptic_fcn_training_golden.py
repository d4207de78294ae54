"""
Panoptic FCN's training targets and loss terms against the official implementation's, stored by
``tools/parity/panoptic_fcn_training.py --write-golden`` (batch of two odd-sized images with
things on every level, stuff, void and padding; the network outputs both sides were given; the
official targets, loss terms and heatmap-logit gradients, with the official commit).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from panoptic_zoo.modeling.panoptic_fcn.losses import PanopticFCNLoss
from panoptic_zoo.modeling.panoptic_fcn.targets import PanopticFCNTargetGenerator

GOLDEN = Path(__file__).parent / "golden" / "panoptic_fcn_training.pt"
LOSS_RTOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN, weights_only=False)


@pytest.fixture(scope="module")
def our_targets(golden):
    config = golden["config"]
    generator = PanopticFCNTargetGenerator(
        num_thing_classes=config["num_thing_classes"],
        num_stuff_classes=config["num_stuff_classes"],
        level_strides=config["level_strides"],
        instance_scales=config["instance_scales"],
        encoder_stride=4,
        min_overlap=config["min_overlap"],
        ignore_value=config["ignore_value"],
    )
    outputs = golden["outputs"]
    level_sizes = [tuple(x.shape[-2:]) for x in outputs["thing_logits"]]
    targets = []
    for record in golden["batch"]:
        ids = record["thing_ids"]
        masks = ids[None] == torch.arange(1, len(record["classes"]) + 1)[:, None, None]
        sem_seg = record["sem_seg"].long()
        before = sem_seg.clone()
        targets.append(
            generator(
                masks, record["boxes"], record["classes"], sem_seg, golden["padded_size"],
                level_sizes, tuple(outputs["encoded"].shape[-2:]),
            )
        )  # fmt: skip
        assert torch.equal(sem_seg, before)  # the official code edits it in place
    return targets


def test_fixture_records_the_official_commit(golden):
    assert len(golden["official_commit"]) == 40
    int(golden["official_commit"], 16)


def test_targets_equal_the_official_ones(golden, our_targets):
    for ours, official in zip(our_targets, golden["official"]["targets"]):
        torch.testing.assert_close(ours.thing_masks, official["thing_masks"], rtol=0, atol=1e-6)
        assigned = official["stuff_assigned"]
        assert assigned.any()
        torch.testing.assert_close(
            ours.stuff_masks[assigned], official["stuff_masks"][assigned], rtol=0, atol=1e-6
        )
        for level, theirs in enumerate(official["levels"]):
            assignment = ours.assignments[level]
            torch.testing.assert_close(
                ours.thing_heatmaps[level], theirs["heatmap"], rtol=0, atol=1e-6
            )
            torch.testing.assert_close(
                ours.stuff_maps[level], theirs["stuff_map"], rtol=0, atol=1e-6
            )
            assert assignment.instance.tolist() == theirs["instance"].tolist()
            assert assignment.classes.tolist() == theirs["classes"].tolist()
            assert ours.stuff_classes[level].tolist() == theirs["stuff_classes"].tolist()
            regions = ours.stuff_maps[level][ours.stuff_classes[level]] > 0
            assert torch.equal(regions.float(), theirs["stuff_regions"])
    # The batch exercises what it is meant to: things on every level, Gaussians wider than a
    # cell, stuff positives and negatives.
    per_level = [sum(len(t.assignments[lv].instance) for t in our_targets) for lv in range(5)]
    assert min(per_level) >= 1
    assert (
        max(int(a.radius.max()) for t in our_targets for a in t.assignments if len(a.radius)) >= 1
    )


def test_loss_terms_and_logit_gradients_equal_the_official_ones(golden, our_targets):
    config = golden["config"]
    criterion = PanopticFCNLoss(
        focal_alpha=config["focal_alpha"],
        focal_gamma=config["focal_gamma"],
        position_weight=config["position_weight"],
        segment_weight=config["segment_weight"],
        top_k_points=config["top_k_points"],
    )
    outputs = golden["outputs"]
    thing_logits = [x.clone().requires_grad_() for x in outputs["thing_logits"]]
    stuff_logits = [x.clone().requires_grad_() for x in outputs["stuff_logits"]]
    stuff_embed = outputs["stuff_embed"]
    losses = criterion(
        thing_logits, stuff_logits, outputs["thing_kernels"], outputs["kernel_features"],
        lambda pooled: F.linear(pooled, stuff_embed["weight"].flatten(1), stuff_embed["bias"]),
        outputs["encoded"], our_targets,
    )  # fmt: skip
    official = golden["official"]
    assert set(losses) == set(official["losses"])
    for name, value in losses.items():
        assert value.item() == pytest.approx(official["losses"][name], rel=LOSS_RTOL), name
    sum(losses.values()).backward()
    for ours, theirs in [
        *zip(thing_logits, official["thing_logit_grads"]),
        *zip(stuff_logits, official["stuff_logit_grads"]),
    ]:
        scale = theirs.abs().max()
        torch.testing.assert_close(ours.grad / scale, theirs / scale, rtol=0, atol=LOSS_RTOL)
