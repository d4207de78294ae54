"""
PQ by segment area (small / medium / large): a hand-computed image, a brute-force count over
masks on random images, the evaluator's keys and table, and its bounds from the config.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from detectron2.evaluation import inference_on_dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from panoptic_cases import CATEGORIES
from test_panoptic_evaluator import GroundTruthModel
from test_pq_properties import panoptic_images

from panoptic_zoo.config import get_cfg
from panoptic_zoo.evaluation import PanopticEvaluator, build_evaluators
from panoptic_zoo.evaluation.pq import (
    AREA_SIZES,
    IOU_UNIT,
    VOID,
    PanopticStats,
    format_pq_table,
    scaled_area_bounds,
)

THING, STUFF = 1, 7  # category ids in CATEGORIES


def hand_case():
    """
    A 12x12 image with bounds (10, 50): a 9-pixel thing predicted exactly (small TP), a
    25-pixel thing predicted as stuff (medium FN), the stuff (110 pixels) matched with
    IoU 94/135 (large TP) and a 16-pixel predicted thing on the stuff (an FP: medium by its own
    area, though the ground truth under it is large).
    """
    gt = np.full((12, 12), 3, np.uint32)
    gt[0:3, 0:3] = 1
    gt[0:5, 5:10] = 2
    gt_segments = [
        {"id": 1, "category_id": THING, "iscrowd": 0, "area": 9},
        {"id": 2, "category_id": THING, "iscrowd": 0, "area": 25},
        {"id": 3, "category_id": STUFF, "iscrowd": 0, "area": 110},
    ]
    pred = gt.copy()
    pred[pred == 2] = 3
    pred[7:11, 0:4] = 4
    pred_segments = [
        {"id": 1, "category_id": THING},
        {"id": 3, "category_id": STUFF},
        {"id": 4, "category_id": THING},
    ]
    return gt, gt_segments, pred, pred_segments


def test_hand_computed_sizes():
    stats = PanopticStats(CATEGORIES, area_bounds=(10, 50))
    stats.add_image(*hand_case())
    results = stats.pq_results()
    small, medium, large = (results["sizes"][s] for s in AREA_SIZES)
    assert small["All"] == small["Things"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}
    assert medium["Things"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 1}  # 1 FN + 1 FP
    stuff_iou = 94 / 135
    assert large["Stuff"]["pq"] == pytest.approx(stuff_iou, abs=1e-15)
    assert large["Stuff"]["sq"] == pytest.approx(stuff_iou, abs=1e-15)
    assert large["Stuff"]["rq"] == 1.0 and large["All"]["n"] == 1
    assert math.isnan(small["Stuff"]["pq"]) and math.isnan(large["Things"]["pq"])
    # Overall, unchanged: the thing has 1 TP (IoU 1), 1 FP and 1 FN.
    assert results["Things"]["pq"] == 0.5
    assert results["All"]["pq"] == pytest.approx((0.5 + stuff_iou) / 2, abs=1e-15)
    table = format_pq_table(results)
    assert "small < 10 <= medium < 50 <= large" in table
    assert "small     | 100.0  100.0    nan     1" in table
    assert "large     |  69.6    nan   69.6     1" in table


def brute_force_counts(images, bounds):
    """Per area bucket and category: summed IoU, TP, FP, FN, from whole masks, segment by segment."""
    index = {c["id"]: k for k, c in enumerate(CATEGORIES)}
    iou, tp, fp, fn = (np.zeros((3, len(CATEGORIES))) for _ in range(4))

    def bucket(area):
        return int(np.searchsorted(bounds, area, side="right"))

    for gt_ids, gt_segments, pred_ids, pred_segments in images:
        gt = {s["id"]: s for s in gt_segments}
        pred = {s["id"]: s["category_id"] for s in pred_segments}
        matched = set()
        for g, segment in gt.items():
            k, area = index[segment["category_id"]], segment["area"]
            if segment["iscrowd"]:
                continue
            found = False
            for p, category in pred.items():
                mine = pred_ids == p
                overlap = np.sum(mine & (gt_ids == g))
                union = area + mine.sum() - overlap - np.sum(mine & (gt_ids == VOID))
                if category == segment["category_id"] and overlap > 0 and overlap / union > 0.5:
                    iou[bucket(area), k] += overlap / union
                    tp[bucket(area), k] += 1
                    matched.add(p)
                    found = True
            if not found:
                fn[bucket(area), k] += 1
        crowd = {s["category_id"]: s["id"] for s in gt_segments if s["iscrowd"]}
        for p, category in pred.items():
            mine = pred_ids == p
            ignored = np.sum(mine & (gt_ids == VOID)) + np.sum(
                mine & (gt_ids == crowd.get(category, -1))
            )
            if p not in matched and ignored / mine.sum() <= 0.5:
                fp[bucket(mine.sum()), index[category]] += 1
    return iou, tp, fp, fn


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    images=st.lists(panoptic_images(), min_size=1, max_size=4),
    bounds=st.tuples(st.integers(1, 40), st.integers(0, 40)).map(lambda b: (b[0], b[0] + b[1])),
)
def test_equals_brute_force_on_random_images(images, bounds):
    stats = PanopticStats(CATEGORIES, area_bounds=bounds)
    for image in images:
        stats.add_image(*image)
    iou, tp, fp, fn = brute_force_counts(images, bounds)
    np.testing.assert_array_equal(stats.size_tp, tp)
    np.testing.assert_array_equal(stats.size_fp, fp)
    np.testing.assert_array_equal(stats.size_fn, fn)
    np.testing.assert_allclose(np.array(stats.size_iou_units) / IOU_UNIT, iou, rtol=0, atol=1e-12)
    # Every segment is in one bucket: the buckets add up to the overall counts.
    for name in ("tp", "fp", "fn"):
        np.testing.assert_array_equal(getattr(stats, f"size_{name}").sum(0), getattr(stats, name))
    assert [sum(column) for column in zip(*stats.size_iou_units)] == stats.iou_units


def test_area_bounds_scale_with_the_image_area():
    images = [{"id": 0, "height": 240, "width": 320}, {"id": 1, "height": 480, "width": 640}]
    assert scaled_area_bounds(images) == (1024 * 0.625, 9216 * 0.625)
    with pytest.raises(ValueError, match="height/width.*TEST.PQ_AREA_BOUNDS"):
        scaled_area_bounds([{"id": 5, "file_name": "x.jpg"}])
    with pytest.raises(ValueError, match="0 < small <= medium"):
        PanopticStats(CATEGORIES, area_bounds=(50, 10))
    with pytest.raises(ValueError, match="different area bounds"):
        PanopticStats(CATEGORIES, (10, 50)) + PanopticStats(CATEGORIES)


def evaluate(dataset_name, evaluator):
    batches = [[record] for record in DatasetCatalog.get(dataset_name)]
    return inference_on_dataset(GroundTruthModel(degrade=True), batches, evaluator)["panoptic_seg"]


def test_evaluator_reports_pq_by_size(tiny_shapes):
    name = tiny_shapes["val"]
    results = evaluate(name, PanopticEvaluator(name))
    # The tiny images (67-99 px) put COCO's bounds at ~23 and ~210 pixels: medium and large.
    assert {"PQm", "SQm_th", "RQl_st", "PQl"} <= set(results)
    assert all(0 <= results[key] <= 100 for key in results if re.fullmatch(r"[PSR]Q[sml].*", key))
    # One bucket that holds everything reproduces the overall PQ, exactly.
    everything_small = evaluate(name, PanopticEvaluator(name, area_bounds=(1e9, 1e9)))
    for suffix in ("", "_th", "_st"):
        assert everything_small["PQs" + suffix] == everything_small["PQ" + suffix]
        assert "PQm" + suffix not in everything_small and "PQl" + suffix not in everything_small


def test_area_bounds_from_the_config(tiny_shapes, tmp_path):
    cfg = get_cfg()
    cfg.TEST.PQ_AREA_BOUNDS = [100.0, 400.0]
    evaluators = build_evaluators(cfg, tiny_shapes["val"], str(tmp_path))._evaluators
    (evaluator,) = [e for e in evaluators if isinstance(e, PanopticEvaluator)]
    assert evaluator._area_bounds == (100.0, 400.0)
    cfg.TEST.PQ_AREA_BOUNDS = [100.0]
    with pytest.raises(ValueError, match="TEST.PQ_AREA_BOUNDS is \\[100.0\\]; give two areas"):
        build_evaluators(cfg, tiny_shapes["val"], str(tmp_path))
