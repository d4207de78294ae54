"""The shared panoptic post-processing (panoptic_zoo.postprocess) on hand-built masks."""

from __future__ import annotations

import math

import pytest
import torch
from detectron2.modeling.postprocessing import sem_seg_postprocess
from detectron2.structures import BitMasks

from panoptic_zoo.postprocess import (
    class_argmax,
    class_logsumexps,
    crop_and_resize,
    masks_above,
    merged_class_probabilities,
    panoptic_segments,
    paste_instances_by_score,
    remove_overlapping_instances,
    resize_panoptic,
)


def test_overlap_removal_keeps_higher_score_within_a_class():
    masks = torch.zeros(4, 4, 4, dtype=torch.bool)
    masks[0, :2] = True
    masks[1, :3] = True  # 8 of its 12 pixels lie on instance 0, same class: dropped
    masks[2, 3] = True
    masks[3, 1:3] = True  # 4 of its 8 pixels lie on instance 0, another class: kept
    scores, classes = torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([1, 1, 1, 0])
    keep = remove_overlapping_instances(masks, scores, classes, 0.3)
    assert keep.tolist() == [0, 2, 3]


def test_segments_ids_and_small_stuff_to_void():
    stuff = torch.tensor([[1, 1, 2], [1, 1, 0], [3, 1, 1]])
    instance = torch.tensor([[-1, -1, -1], [-1, 0, 0], [-1, -1, 1]])
    segments, info = panoptic_segments(stuff, instance, torch.tensor([4, 2]),
                                       torch.tensor([0.75, 0.5]), stuff_area_limit=2)  # fmt: skip
    assert info == [
        {"id": 1, "category_id": 4, "isthing": True, "score": 0.75, "area": 2},
        {"id": 2, "category_id": 2, "isthing": True, "score": 0.5, "area": 1},
        {"id": 3, "category_id": 1, "isthing": False, "area": 4},
    ]
    # Stuff 2 and 3 have 1 pixel each (< 2): void.
    assert segments.tolist() == [[3, 3, 0], [3, 1, 1], [0, 3, 2]]


def test_paste_by_score_fills_free_pixels_and_skips_covered_or_low_scored():
    masks = torch.zeros(4, 3, 4, dtype=torch.bool)
    masks[0, :, :2] = True  # 6 pixels, score 0.5
    masks[1, :2, 1:3] = True  # 4 pixels, 2 of them on instance 0 (0.5 <= 0.5): pasted on 2
    masks[2, :, 0] = True  # wholly on instance 0: skipped
    masks[3, 2, 3] = True  # free, but scored below the threshold
    index = paste_instances_by_score(masks, torch.tensor([0.5, 0.4, 0.3, 0.1]), 0.2, 0.5)
    assert index.tolist() == [[0, 0, 1, -1], [0, 0, 1, -1], [0, 0, -1, -1]]


def test_resize_recounts_areas_and_drops_vanished_segments():
    segments = torch.tensor([[1, 1], [2, 3]], dtype=torch.int32)
    info = [{"id": i, "area": 1} for i in (1, 2, 3)]
    resized, kept = resize_panoptic(segments, info, 4, 2)
    assert resized.tolist() == [[1, 1], [1, 1], [2, 3], [2, 3]]
    assert kept == [{"id": 1, "area": 4}, {"id": 2, "area": 2}, {"id": 3, "area": 2}]
    resized, kept = resize_panoptic(segments, info, 1, 1)
    assert resized.tolist() == [[1]] and kept == [{"id": 1, "area": 1}]


def test_crop_and_resize_is_detectron2_sem_seg_postprocess():
    maps = torch.randn(3, 40, 48)
    for image_size, height, width in [((37, 45), 37, 45), ((37, 45), 74, 90), ((40, 48), 21, 33)]:
        expected = sem_seg_postprocess(maps, image_size, height, width)
        assert torch.equal(crop_and_resize(maps, image_size, height, width), expected)


def test_class_logsumexps_in_chunks_are_torch_logsumexp(c_kernels):
    padded = torch.randn(7, 40, 9001) * 20
    logits = padded[:, :37, :8999]  # a crop: strided, rows in chunks and a partial last one
    everything, group = class_logsumexps(logits, slice(2, 5))
    # To float rounding: torch's exp takes another code path on the strided whole.
    torch.testing.assert_close(everything, torch.logsumexp(logits, dim=0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(group, torch.logsumexp(logits[2:5], dim=0), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("group", [slice(0, 3), slice(3, 6), slice(1, 4), slice(0, 6)])
@pytest.mark.parametrize("layout", ["float32", "channels_last", "float64"])
def test_class_logsumexps_on_extreme_logits(layout, group, c_kernels):
    """The C kernel (float32, contiguous columns) and PyTorch's path (the other layouts)."""
    logits = torch.randn(6, 5, 7) * 1000  # exp underflows for almost every class
    logits[:, 0, 0] = -math.inf  # no class at all
    logits[2, 0, 1] = math.inf
    logits[:, 0, 2] = -math.inf
    logits[3, 0, 2] = 4.0  # one finite class
    logits[0, 1, 3] = logits[5, 1, 3] = math.inf  # +inf on both sides of the middle groups
    logits[5, 4, 6] = math.nan
    if layout == "channels_last":
        logits = logits.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    elif layout == "float64":
        logits = logits.double()
    everything, in_group = class_logsumexps(logits, group)
    expected = [(everything, logits.logsumexp(0)), (in_group, logits[group].logsumexp(0))]
    for got, wanted in expected:
        torch.testing.assert_close(got, wanted, rtol=1e-6, atol=1e-6, equal_nan=True)
    assert everything[0, 0] == -math.inf and everything[0, 1] == math.inf and everything[0, 2] == 4
    assert everything[4, 6].isnan()


@pytest.mark.parametrize("merged", [slice(5, None), slice(0, 2), slice(2, 5), slice(0, 7)])
def test_merged_class_probabilities_are_the_softmax_summed_over_a_group(merged):
    padded = torch.randn(7, 40, 9001) * 5
    logits = padded[:, :37, :8999]  # a strided crop, rows in chunks and a partial last one
    probs = logits.softmax(dim=0)
    kept = [c for c in range(7) if c not in range(7)[merged]]
    expected = torch.cat((probs[merged].sum(dim=0, keepdim=True), probs[kept]))
    got = merged_class_probabilities(logits, merged)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_merged_class_probabilities_on_extreme_logits():
    logits = torch.randn(6, 5, 7) * 1000  # exp underflows for almost every class
    logits[:, 0, 0] = -math.inf  # no class at all: NaN, as torch
    logits[2, 0, 1] = math.inf  # NaN, as torch
    logits[:, 0, 2] = -math.inf
    logits[3, 0, 2] = 4.0  # one finite class
    probs = logits.softmax(dim=0)
    expected = torch.cat((probs[3:].sum(dim=0, keepdim=True), probs[:3]))
    torch.testing.assert_close(
        merged_class_probabilities(logits, slice(3, 6)), expected, rtol=1e-6, atol=1e-6,
        equal_nan=True,
    )  # fmt: skip
    with pytest.raises(ValueError, match="consecutive classes"):
        merged_class_probabilities(logits, slice(0, 6, 2))


def test_class_argmax_is_torch_argmax(c_kernels):
    padded = (torch.randn(9, 23, 1100) * 4).round()  # ties: the first maximum wins
    logits = padded[:, 1:22, :1037]  # strided crop; widths over the kernel's 512-pixel blocks
    logits[3, 2, 5] = math.nan  # NaN is the largest, its first occurrence wins
    logits[7, 2, 5] = math.nan
    logits[0, 3, 3] = math.nan
    assert torch.equal(class_argmax(logits), logits.argmax(dim=0))
    single_class = torch.randn(1, 4, 5)
    assert torch.equal(class_argmax(single_class), torch.zeros(4, 5, dtype=torch.long))
    as_double = logits.double()  # other dtypes: PyTorch's own
    assert torch.equal(class_argmax(as_double), as_double.argmax(dim=0))


def test_masks_above_with_detectron2_boxes():
    maps = torch.rand(5, 37, 29)
    maps[1] = 0  # an empty mask
    maps[2] = 0
    maps[2, 36, 28] = 1  # a single pixel in the last corner
    maps[3] = 0
    maps[3, 0, :] = 1  # a full first row
    masks, boxes = masks_above(maps, 0.7, chunk_floats=400)  # several row chunks
    assert torch.equal(masks, maps > 0.7)
    assert torch.equal(boxes, BitMasks(maps > 0.7).get_bounding_boxes().tensor)
    assert boxes[1].tolist() == [0, 0, 0, 0] and boxes[2].tolist() == [28, 36, 29, 37]


def test_class_logsumexps_needs_a_slice_of_consecutive_classes():
    for group in (slice(0, 0), slice(0, 4, 2)):
        with pytest.raises(ValueError, match="consecutive classes"):
            class_logsumexps(torch.zeros(4, 2, 3), group)
