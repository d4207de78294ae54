"""
Converted official weights give the official implementation's outputs, without the official
code: golden/official_parity.pth holds a tiny randomly initialized official head's weights, the
backbone features of a batch of two odd-sized images, and what the official code computed from
them: every prediction's class and mask logits, the panoptic, semantic and instance outputs,
the panoptic merge on richer inputs at two threshold settings, and on a fixed training batch
(torch seeded) each prediction's Hungarian assignment and every loss term. Written by
tools/parity/mask2former.py --write-golden, the official commit recorded in it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from detectron2.config import CfgNode
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Instances

from panoptic_zoo.config import get_cfg
from panoptic_zoo.model_zoo.converters import convert_official_mask2former

GOLDEN = Path(__file__).parent / "golden" / "official_parity.pth"
NUM_THINGS = 5


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN, weights_only=True)


@pytest.fixture(scope="module")
def model(golden):
    cfg = get_cfg()
    cfg.merge_from_other_cfg(CfgNode.load_cfg(golden["config_yaml"]))
    model = build_model(cfg).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the licence warning, tested in test_converter
        conversion = convert_official_mask2former(golden["official_head_state_dict"])
    assert conversion.unused == ["criterion.empty_weight"] and not conversion.notes
    missing, unexpected = model.load_state_dict(conversion.state_dict, strict=False)
    assert not unexpected and all(key.startswith("backbone.") for key in missing)
    return model


@pytest.fixture(scope="module")
def predictions(golden, model):
    with torch.no_grad():
        return model.head(golden["features"], all_predictions=True)


def _padded_size(golden) -> tuple[int, int]:
    """The batch's padded input size: res2 is at stride 4."""
    return tuple(4 * size for size in golden["features"]["res2"].shape[-2:])


def _assert_same_panoptic(ours, official):
    ids, segments = ours
    official_ids, official_segments = official
    assert torch.equal(ids, official_ids.int())
    assert len(segments) == len(official_segments)
    for segment, expected in zip(segments, official_segments):
        category = expected["category_id"]
        if not expected["isthing"]:
            category -= NUM_THINGS - 1  # unified stuff class -> separated id 1..S
        assert (segment["id"], segment["isthing"], segment["category_id"]) == (
            expected["id"], expected["isthing"], category,
        )  # fmt: skip
        assert segment["area"] == int((official_ids == expected["id"]).sum())


def test_golden_records_the_official_commit(golden):
    assert len(golden["official_commit"]) == 40
    assert len(golden["class_logits"]) == 10  # the learnable queries' + 9 decoder layers'


def test_every_prediction_matches(golden, predictions):
    class_logits, mask_logits = predictions
    assert len(class_logits) == len(golden["class_logits"])
    for ours, official in zip(class_logits, golden["class_logits"]):
        torch.testing.assert_close(ours, official, atol=1e-4, rtol=0)
    for ours, official in zip(mask_logits, golden["mask_logits"]):
        torch.testing.assert_close(ours, official, atol=1e-4, rtol=0)


@pytest.mark.parametrize("image", [0, 1])
def test_postprocessing_matches(golden, model, predictions, image):
    class_logits, mask_logits = predictions
    size = tuple(golden["image_sizes"][image])
    result = model.postprocessor(class_logits[-1][image], mask_logits[-1][image],
                                 _padded_size(golden), size, size)  # fmt: skip
    _assert_same_panoptic(result["panoptic_seg"], golden["panoptic"][image])
    assert len(result["panoptic_seg"][1]) >= 2

    official_semantic = golden["sem_seg"][image].float()
    expected = torch.cat([official_semantic[:NUM_THINGS].sum(0, keepdim=True),
                          official_semantic[NUM_THINGS:]])  # fmt: skip
    torch.testing.assert_close(result["sem_seg"], expected, atol=2e-2, rtol=2e-3)

    instances, official = result["instances"], golden["instances"][image]
    ours_order, official_order = instances.scores.argsort(), official["scores"].argsort()
    torch.testing.assert_close(instances.scores[ours_order], official["scores"][official_order],
                               atol=1e-5, rtol=0)  # fmt: skip
    assert torch.equal(instances.pred_classes[ours_order], official["classes"][official_order])
    agreement = (instances.pred_masks[ours_order] == official["masks"][official_order]).float()
    assert agreement.mean() >= 0.999


def test_panoptic_merge_matches_on_richer_inputs(golden, model):
    cases = golden["merge_cases"]
    outputs = iter(golden["merge_outputs"])
    stuff_merged = 0
    try:
        for object_threshold, overlap_threshold in golden["merge_thresholds"]:
            model.postprocessor.object_mask_threshold = object_threshold
            model.postprocessor.overlap_threshold = overlap_threshold
            for class_logits, mask_logits, size in cases:
                padded = (mask_logits.shape[-2] * 4, mask_logits.shape[-1] * 4)
                size = tuple(size)
                result = model.postprocessor(class_logits, mask_logits, padded, size, size)
                expected = next(outputs)
                _assert_same_panoptic(result["panoptic_seg"], expected)
                kept = class_logits.softmax(-1).max(-1)
                stuff_queries = kept.indices[(kept.values > object_threshold)
                                             & (kept.indices >= NUM_THINGS)
                                             & (kept.indices < class_logits.shape[1] - 1)]  # fmt: skip
                stuff_merged += len(stuff_queries) - len(torch.unique(stuff_queries))
    finally:
        model.postprocessor.object_mask_threshold = model.postprocessor.overlap_threshold = 0.8
    assert stuff_merged > 0  # the cases exercise the merge of one stuff class's queries


def test_matching_and_losses_match(golden, model, predictions):
    class_logits, mask_logits = predictions
    padded = _padded_size(golden)
    targets = []
    for masks, classes, sem_seg in golden["training_segments"]:
        instances = Instances(tuple(sem_seg.shape))
        instances.gt_masks = BitMasks(masks)
        instances.gt_classes = classes
        targets.append(model.targets({"instances": instances, "sem_seg": sem_seg.long()}, padded))

    calls = []
    matcher = model.criterion.matcher

    def recorded(*args):
        calls.append(matcher(*args))
        return calls[-1]

    model.criterion.matcher = recorded
    try:
        torch.manual_seed(golden["seed"])
        losses = model.criterion(class_logits, mask_logits, targets)
    finally:
        model.criterion.matcher = matcher
    assert sorted(losses) == sorted(golden["losses"])
    for name, expected in golden["losses"].items():
        torch.testing.assert_close(losses[name], expected, atol=1e-5, rtol=0, msg=name)
    assert len(calls) == len(golden["matches"]) == 10
    for ours, official in zip(calls, golden["matches"]):
        for (queries, indices), (official_queries, official_indices) in zip(ours, official):
            assert torch.equal(queries, official_queries)
            assert torch.equal(indices, official_indices)
