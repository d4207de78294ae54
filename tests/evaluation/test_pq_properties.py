"""
Property tests: on random ground-truth/prediction pairs, panoptic_zoo's PQ equals panopticapi's
``pq_compute`` to 1e-12, the in-memory path equals the file path exactly, and the pixel
confusion equals a per-pixel count.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from panoptic_cases import CATEGORIES, assert_same_pq, panopticapi_pq, write_case

from panoptic_zoo.evaluation.pq import VOID, PanopticStats
from panoptic_zoo.evaluation.pq_compute import evaluate_panoptic_files

CATEGORY_IDS = [c["id"] for c in CATEGORIES]
SEGMENT_IDS = st.integers(1, 2**24 - 1)


@st.composite
def panoptic_images(draw):
    """
    One image: a ground-truth id map over a few listed ids, VOID and possibly an id that
    segments_info does not list; the prediction relabels it (merging some segments), then
    paints a rectangle, so IoUs fall on both sides of 0.5.
    """
    height, width = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    gt_listed = draw(st.lists(SEGMENT_IDS, max_size=5, unique=True))
    unlisted = draw(st.lists(SEGMENT_IDS.filter(lambda i: i not in gt_listed), max_size=1))
    palette = [VOID, *gt_listed, *unlisted]
    gt_ids = draw(arrays(np.uint32, (height, width), elements=st.sampled_from(palette)))
    # Listed segments may also cover no pixel (area 0), as panopticapi allows.
    gt_segments = [
        {
            "id": segment_id,
            "category_id": draw(st.sampled_from(CATEGORY_IDS)),
            "iscrowd": int(draw(st.integers(0, 4)) == 0),
            "area": int((gt_ids == segment_id).sum()),
        }
        for segment_id in gt_listed
    ]

    targets = [VOID, *draw(st.lists(SEGMENT_IDS, min_size=1, max_size=3))]
    relabel = {value: draw(st.sampled_from(targets)) for value in palette}
    pred_ids = np.vectorize(relabel.get, otypes=[np.uint32])(gt_ids)
    top, left = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
    bottom, right = draw(st.integers(top, height)), draw(st.integers(left, width))
    pred_ids[top:bottom, left:right] = draw(
        st.sampled_from([VOID, *relabel.values()]) | SEGMENT_IDS
    )
    # Predicted categories mostly follow the ground truth they came from, so matches happen.
    gt_category = {s["id"]: s["category_id"] for s in gt_segments}
    source = {relabel[g]: g for g in palette}
    pred_segments = []
    for segment_id in np.unique(pred_ids).tolist():
        if segment_id == VOID:
            continue
        category = gt_category.get(source.get(segment_id))
        if category is None or draw(st.integers(0, 5)) == 0:
            category = draw(st.sampled_from(CATEGORY_IDS))
        pred_segments.append({"id": segment_id, "category_id": category})
    return gt_ids, gt_segments, pred_ids, pred_segments


def assert_same_stats(a: PanopticStats, b: PanopticStats) -> None:
    assert a.iou_units == b.iou_units
    for field in ("tp", "fp", "fn", "confusion"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def confusion_per_pixel(images) -> np.ndarray:
    """The category confusion, counted pixel by pixel."""
    index = {c["id"]: k for k, c in enumerate(CATEGORIES)}
    confusion = np.zeros((len(CATEGORIES), len(CATEGORIES) + 1), np.int64)
    for gt_ids, gt_segments, pred_ids, pred_segments in images:
        gt_category = {s["id"]: s["category_id"] for s in gt_segments}
        pred_category = {s["id"]: s["category_id"] for s in pred_segments}
        for g, p in zip(gt_ids.ravel().tolist(), pred_ids.ravel().tolist()):
            if g in gt_category:
                column = index[pred_category[p]] if p != VOID else len(CATEGORIES)
                confusion[index[gt_category[g]], column] += 1
    return confusion


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(panoptic_images(), min_size=1, max_size=3))
def test_equals_panopticapi_on_random_images(images):
    with tempfile.TemporaryDirectory() as root:
        case = write_case(Path(root), images)
        from_files = evaluate_panoptic_files(
            case["gt_json"], case["pred_json"], case["gt_folder"], case["pred_folder"], threads=1
        )
        reference = panopticapi_pq(case)

    assert_same_pq(from_files.pq_results(), reference)
    in_memory = PanopticStats(CATEGORIES)
    for image in images:
        in_memory.add_image(*image)
    assert_same_stats(in_memory, from_files)
    np.testing.assert_array_equal(in_memory.confusion, confusion_per_pixel(images))


@settings(max_examples=40, deadline=None)
@given(st.lists(panoptic_images(), min_size=2, max_size=5), st.data())
def test_sum_over_any_split_is_the_same(images, data):
    """What distributed evaluation relies on: statistics of parts add up exactly."""
    cut = data.draw(st.integers(1, len(images) - 1))
    whole, first, second = (PanopticStats(CATEGORIES) for _ in range(3))
    for k, image in enumerate(images):
        whole.add_image(*image)
        (first if k < cut else second).add_image(*image)
    assert_same_stats(second + first, whole)
