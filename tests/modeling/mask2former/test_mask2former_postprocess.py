"""Mask2Former post-processing rules on hand-computed cases (the official outputs on richer
test_mask2former_official_golden.py)."""

from __future__ import annotations

import math

import pytest
import torch

from panoptic_zoo.modeling.mask2former import Mask2FormerPostprocessor, panoptic_merge

THINGS = 2  # unified classes: things 0, 1; stuff 2, 3 (separated stuff ids 1, 2); no object 4


def _probs(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_pixels_go_to_the_best_score_times_probability_and_stuff_merges():
    # 2 x 6 image. A (thing 1, 0.9) holds the left 2 columns, B (stuff 3, 0.85) the right 4;
    # C (also stuff 3, 0.95) is sure of one pixel only, where 0.95 x 0.99 beats B's 0.85 x 0.8.
    # B keeps 7 of its 8 pixels (0.875 >= the 0.8 overlap threshold).
    a = _probs([[0.9, 0.9, 0.1, 0.1, 0.1, 0.1]] * 2)
    b = _probs([[0.2, 0.2, 0.8, 0.8, 0.8, 0.8]] * 2)
    c = _probs([[0.1] * 6, [0.1, 0.1, 0.1, 0.1, 0.1, 0.99]])
    segments, info = panoptic_merge(
        torch.tensor([0.9, 0.85, 0.95]), torch.tensor([1, 3, 3]), torch.stack([a, b, c]),
        THINGS, overlap_threshold=0.8,
    )  # fmt: skip
    # C's pixel joins B's segment: one segment per stuff class, with the first one's id.
    assert segments.tolist() == [[1, 1, 2, 2, 2, 2]] * 2
    assert segments.dtype == torch.int32
    assert info == [
        {"id": 1, "isthing": True, "category_id": 1, "score": pytest.approx(0.9), "area": 4},
        {"id": 2, "isthing": False, "category_id": 2, "area": 8},  # stuff 3 -> separated 2
    ]
    # With B's share of its mask below the threshold, B is dropped and C stands alone.
    segments, info = panoptic_merge(
        torch.tensor([0.9, 0.85, 0.95]), torch.tensor([1, 3, 3]), torch.stack([a, b, c]),
        THINGS, overlap_threshold=0.9,
    )  # fmt: skip
    assert segments.tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 2]]
    assert [(s["id"], s["area"]) for s in info] == [(1, 4), (2, 1)]


@pytest.mark.parametrize("overlap_threshold, kept", [(0.8, False), (0.3, True)])
def test_a_segment_much_smaller_than_its_mask_is_dropped(overlap_threshold, kept):
    # P (thing 0, 0.9) owns the left 2 columns (0.81 > Q's 0.85 x 0.95 = 0.8075); Q (thing 1)
    # has 6 pixels >= 0.5 but owns only column 2's two: 2 / 6 = 0.33 of its mask.
    p = _probs([[0.9, 0.9, 0.0, 0.0], [0.9, 0.9, 0.0, 0.0]])
    q = _probs([[0.95, 0.95, 0.95, 0.0], [0.95, 0.95, 0.95, 0.0]])
    segments, info = panoptic_merge(torch.tensor([0.9, 0.85]), torch.tensor([0, 1]),
                                    torch.stack([p, q]), THINGS, overlap_threshold)  # fmt: skip
    if kept:
        assert segments.tolist() == [[1, 1, 2, 0], [1, 1, 2, 0]]
        assert [s["area"] for s in info] == [4, 2]
    else:
        # Column 3 is P's by the argmax (0.9 x 0 = 0 ties Q's 0 and the first wins) but P's
        # probability there is below 0.5: void.
        assert segments.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0]]
        assert [s["id"] for s in info] == [1]


def test_probability_of_exactly_one_half_is_in_the_mask():
    segments, info = panoptic_merge(torch.tensor([0.9]), torch.tensor([2]),
                                    torch.full((1, 2, 2), 0.5), THINGS, 0.8)  # fmt: skip
    assert segments.tolist() == [[1, 1], [1, 1]]
    assert info == [{"id": 1, "isthing": False, "category_id": 1, "area": 4}]


def _postprocessor(**overrides):
    settings = dict(num_thing_classes=THINGS, object_mask_threshold=0.8, overlap_threshold=0.8,
                    max_detections=100)  # fmt: skip
    return Mask2FormerPostprocessor(**{**settings, **overrides})


def _logits(probabilities):
    """Class logits whose softmax is ``probabilities`` (rows summing to 1)."""
    return torch.tensor(probabilities).log()


def test_queries_scoring_no_object_or_not_above_the_threshold_are_dropped():
    # Four queries, constant masks (logit 2: probability 0.88 everywhere) on a 3 x 5 input at
    # stride 4 of 12 x 20. Only query 2 (thing 1 at 0.85) passes: query 0's best is "no
    # object", query 1 scores exactly 0.8 (not above), query 3 only 0.5.
    classes = _logits([
        [0.05, 0.05, 0.0, 0.0, 0.9],
        [0.8, 0.1, 0.05, 0.05, 0.0],
        [0.05, 0.85, 0.05, 0.05, 0.0],
        [0.1, 0.1, 0.5, 0.2, 0.1],
    ])  # fmt: skip
    masks = torch.full((4, 3, 5), 2.0)
    result = _postprocessor()(classes, masks, (12, 20), (11, 17), (22, 34))
    segments, info = result["panoptic_seg"]
    assert segments.shape == (22, 34) and bool((segments == 1).all())
    assert info == [{"id": 1, "isthing": True, "category_id": 1, "score": pytest.approx(0.85),
                     "area": 22 * 34}]  # fmt: skip


def test_semantic_maps_sum_class_times_mask_probabilities_with_things_merged():
    classes = _logits([[0.1, 0.2, 0.3, 0.3, 0.1], [0.5, 0.1, 0.1, 0.2, 0.1]])
    masks = torch.stack([torch.full((2, 2), 0.0), torch.full((2, 2), math.log(3))])  # 0.5, 0.75
    semantic = _postprocessor()(classes, masks, (8, 8), (8, 8), (8, 8))["sem_seg"]
    assert semantic.shape == (3, 8, 8)
    expected = [
        (0.1 + 0.2) * 0.5 + (0.5 + 0.1) * 0.75,  # "any thing": both thing classes
        0.3 * 0.5 + 0.1 * 0.75,  # stuff 1 (unified 2)
        0.3 * 0.5 + 0.2 * 0.75,  # stuff 2 (unified 3)
    ]
    torch.testing.assert_close(semantic[:, 0, 0], torch.tensor(expected), atol=1e-6, rtol=0)


def test_instances_are_the_top_thing_pairs_rescored_by_their_mask():
    classes = _logits([
        [0.6, 0.3, 0.05, 0.04, 0.01],
        [0.2, 0.1, 0.65, 0.04, 0.01],
        [0.02, 0.9, 0.04, 0.03, 0.01],
    ])  # fmt: skip
    # Constant mask logits: 1 (probability 0.731), 3 (irrelevant: only its stuff pair is in the
    # top 4) and -2 (an empty mask).
    masks = torch.tensor([1.0, 3.0, -2.0])[:, None, None].expand(3, 2, 2)
    postprocessor = _postprocessor(max_detections=4)
    instances = postprocessor(classes, masks, (8, 8), (8, 8), (8, 8))["instances"]
    # The top 4 (query, class) pairs: (2, 1) 0.9, (1, stuff 2) 0.65 (dropped: stuff), (0, 0)
    # 0.6, (0, 1) 0.3; each scored by its class probability x its mean probability inside.
    order = instances.scores.argsort(descending=True)
    assert instances.pred_classes[order].tolist() == [0, 1, 1]
    inside = torch.sigmoid(torch.tensor(1.0)).item()
    expected = [0.6 * inside, 0.3 * inside, 0.0]
    torch.testing.assert_close(instances.scores[order], torch.tensor(expected), atol=1e-5, rtol=0)
    assert instances.pred_masks.dtype == torch.bool and instances.pred_masks.shape == (3, 8, 8)
    assert instances.pred_masks[order].flatten(1).sum(1).tolist() == [64, 64, 0]
    assert instances.pred_boxes.tensor[order].tolist() == [[0, 0, 8, 8], [0, 0, 8, 8], [0] * 4]
