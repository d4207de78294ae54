"""Hand-built PQ cases, each checked against panopticapi and against the counts it must give."""

from __future__ import annotations

import math

import numpy as np
import pytest
from panoptic_cases import CATEGORIES, assert_same_pq, panopticapi_pq, write_case

from panoptic_zoo.evaluation.pq import PanopticStats, pixel_pairs
from panoptic_zoo.evaluation.pq_compute import evaluate_panoptic_files

DISC, BOX, SKY, GROUND = (c["id"] for c in CATEGORIES)


def gt(segment_id, category, area, iscrowd=0):
    return {"id": segment_id, "category_id": category, "iscrowd": iscrowd, "area": area}


def pred(segment_id, category):
    return {"id": segment_id, "category_id": category}


def evaluate(tmp_path, images) -> tuple[PanopticStats, dict]:
    """Our statistics from the files of ``images``, after checking PQ against panopticapi."""
    case = write_case(tmp_path, images)
    stats = evaluate_panoptic_files(
        case["gt_json"], case["pred_json"], case["gt_folder"], case["pred_folder"]
    )
    assert_same_pq(stats.pq_results(), panopticapi_pq(case))
    return stats, stats.pq_results()


def counts(stats: PanopticStats, category: int) -> tuple[int, int, int]:
    k = [c["id"] for c in CATEGORIES].index(category)
    return int(stats.tp[k]), int(stats.fp[k]), int(stats.fn[k])


def test_empty_image_alone_has_no_categories_and_adds_nothing_to_others(tmp_path):
    void = np.zeros((4, 5), np.uint32)
    stats, results = evaluate(tmp_path / "alone", [(void, [], void, [])])
    assert all(
        results[g]["n"] == 0 and math.isnan(results[g]["pq"]) for g in ("All", "Things", "Stuff")
    )

    sky = np.full((4, 5), 5, np.uint32)
    image = (sky, [gt(5, SKY, 20)], sky * 2, [pred(10, SKY)])
    _, with_empty = evaluate(tmp_path / "with", [image, (void, [], void, [])])
    _, without = evaluate(tmp_path / "without", [image])
    assert with_empty == without


def test_all_void_ground_truth_ignores_predictions_on_it(tmp_path):
    void = np.zeros((4, 4), np.uint32)
    prediction = np.array([[1, 1, 2, 2]] * 4, np.uint32)
    stats, results = evaluate(tmp_path, [(void, [], prediction, [pred(1, DISC), pred(2, SKY)])])
    assert counts(stats, DISC) == counts(stats, SKY) == (0, 0, 0)
    assert results["All"]["n"] == 0


def test_only_stuff(tmp_path):
    ground_truth = np.array([[1, 1, 1, 2, 2, 2]] * 3, np.uint32)
    prediction = np.array([[7, 7, 7, 7, 8, 8]] * 3, np.uint32)
    stats, results = evaluate(
        tmp_path,
        [(ground_truth, [gt(1, SKY, 9), gt(2, GROUND, 9)], prediction,
          [pred(7, SKY), pred(8, GROUND)])],
    )  # fmt: skip
    assert counts(stats, SKY) == (1, 0, 0)  # IoU 9/12
    assert counts(stats, GROUND) == (1, 0, 0)  # IoU 6/9
    assert results["Stuff"]["pq"] == pytest.approx((9 / 12 + 6 / 9) / 2, abs=1e-15)
    assert results["Things"]["n"] == 0 and math.isnan(results["Things"]["pq"])


def test_only_crowd(tmp_path):
    crowd = np.full((4, 4), 3, np.uint32)
    same_category = np.array([[1, 1, 0, 0]] * 4, np.uint32)
    other_category = np.array([[0, 0, 2, 2]] * 4, np.uint32)
    stats, _ = evaluate(
        tmp_path,
        [(crowd, [gt(3, DISC, 16, iscrowd=1)], same_category + other_category,
          [pred(1, DISC), pred(2, BOX)])],
    )  # fmt: skip
    assert counts(stats, DISC) == (0, 0, 0)  # on its category's crowd region: ignored
    assert counts(stats, BOX) == (0, 1, 0)  # a crowd region of another category is no excuse


def test_iou_must_exceed_one_half(tmp_path):
    ground_truth = np.array([[1, 1, 0, 0]], np.uint32)
    half = np.array([[4, 0, 0, 0]], np.uint32)
    stats, _ = evaluate(tmp_path, [(ground_truth, [gt(1, BOX, 2)], half, [pred(4, BOX)])])
    assert counts(stats, BOX) == (0, 1, 1)


def test_void_pixels_of_a_prediction_are_left_out_of_the_union(tmp_path):
    ground_truth = np.array([[1, 1, 0, 0, 0]], np.uint32)
    prediction = np.full((1, 5), 6, np.uint32)
    stats, results = evaluate(
        tmp_path, [(ground_truth, [gt(1, BOX, 2)], prediction, [pred(6, BOX)])]
    )
    assert counts(stats, BOX) == (1, 0, 0)
    assert results["per_class"][BOX]["sq"] == 1.0


def test_unmatched_prediction_mostly_on_void_or_crowd_is_not_a_false_positive(tmp_path):
    ground_truth = np.array([[0, 0, 9, 9, 1, 1, 1, 1, 1, 1]], np.uint32)
    segments = [gt(9, DISC, 2, iscrowd=1), gt(1, SKY, 6)]
    # 2 void + 2 crowd of 5 pixels: ignored; 1 void + 2 crowd of 6: ignored (3/6 is not > 1/2).
    mostly_ignored = np.array([[5, 5, 5, 5, 5, 1, 1, 1, 1, 1]], np.uint32)
    half_ignored = np.array([[0, 5, 5, 5, 5, 5, 5, 1, 1, 1]], np.uint32)
    stats, _ = evaluate(
        tmp_path / "a", [(ground_truth, segments, mostly_ignored, [pred(5, DISC), pred(1, SKY)])]
    )
    assert counts(stats, DISC) == (0, 0, 0)
    stats, _ = evaluate(
        tmp_path / "b", [(ground_truth, segments, half_ignored, [pred(5, DISC), pred(1, SKY)])]
    )
    assert counts(stats, DISC) == (0, 1, 0)


def test_only_the_last_crowd_segment_of_a_category_is_its_crowd_region(tmp_path):
    ground_truth = np.array([[1, 1, 1, 2, 2, 2]], np.uint32)
    segments = [gt(1, DISC, 3, iscrowd=1), gt(2, DISC, 3, iscrowd=1)]
    on_first = np.array([[4, 4, 4, 0, 0, 0]], np.uint32)
    on_last = np.array([[0, 0, 0, 4, 4, 4]], np.uint32)
    stats, _ = evaluate(tmp_path / "first", [(ground_truth, segments, on_first, [pred(4, DISC)])])
    assert counts(stats, DISC) == (0, 1, 0)
    stats, _ = evaluate(tmp_path / "last", [(ground_truth, segments, on_last, [pred(4, DISC)])])
    assert counts(stats, DISC) == (0, 0, 0)


def test_ground_truth_ids_without_annotation_are_not_void(tmp_path):
    ground_truth = np.array([[8, 8, 8, 8]], np.uint32)  # id 8 is not in segments_info
    prediction = np.array([[3, 3, 3, 3]], np.uint32)
    stats, _ = evaluate(tmp_path, [(ground_truth, [], prediction, [pred(3, GROUND)])])
    assert counts(stats, GROUND) == (0, 1, 0)
    assert stats.confusion.sum() == 0  # nor labelled: no pixel counts for mIoU


def test_ground_truth_area_comes_from_the_annotation(tmp_path):
    ground_truth = np.array([[1, 1, 1, 0]], np.uint32)
    prediction = np.array([[2, 2, 0, 0]], np.uint32)
    # IoU 2/3 with the pixels, 2/5 with the annotated area 4.
    stats, _ = evaluate(tmp_path, [(ground_truth, [gt(1, SKY, 4)], prediction, [pred(2, SKY)])])
    assert counts(stats, SKY) == (0, 1, 1)

    without_area = PanopticStats(CATEGORIES)
    without_area.add_image(
        ground_truth, [{"id": 1, "category_id": SKY}], prediction, [pred(2, SKY)]
    )
    assert counts(without_area, SKY) == (1, 0, 0)
    # Counted, the area includes the pixels predicted VOID: IoU 2/4, not a match.
    half_void = PanopticStats(CATEGORIES)
    half_void.add_image(
        np.array([[1, 1, 1, 1]]), [{"id": 1, "category_id": SKY}], np.array([[2, 2, 0, 0]]),
        [pred(2, SKY)],
    )
    assert counts(half_void, SKY) == (0, 1, 1)


def test_mean_iou_of_categories(tmp_path):
    ground_truth = np.array([[1, 1, 2, 2, 0]], np.uint32)
    prediction = np.array([[5, 6, 6, 0, 6]], np.uint32)
    stats = PanopticStats(CATEGORIES)
    stats.add_image(ground_truth, [gt(1, DISC, 2), gt(2, SKY, 2)], prediction,
                    [pred(5, DISC), pred(6, SKY)])  # fmt: skip
    semantic = stats.semantic_results()
    # disc: 1 of 2 pixels right, none predicted elsewhere; sky: 1 right, 1 missed (void
    # prediction), 1 disc pixel taken; the sky pixel on void ground truth does not count.
    assert semantic["per_class"][DISC] == 0.5
    assert semantic["per_class"][SKY] == 1 / 3
    assert math.isnan(semantic["per_class"][BOX])
    assert semantic["mIoU"] == pytest.approx((0.5 + 1 / 3) / 2)


@pytest.mark.parametrize(
    "prediction, segments, message",
    [
        ([[1, 2]], [pred(1, SKY)], r"segment ids \[2\] are in the predicted segmentation"),
        ([[1, 1]], [pred(1, SKY), pred(2, SKY)], r"lists ids \[2\], which cover no pixel"),
        ([[1, 1]], [pred(1, 42)], "category_id 42, which is not a category"),
        ([[1, 1]], [pred(1, SKY), pred(1, BOX)], "listed twice"),
        ([[0, 0]], [pred(0, SKY)], "the VOID label"),
        ([[1], [1]], [pred(1, SKY)], "ground truth is 1x2 pixels but the prediction is 2x1"),
    ],
)
def test_predictions_that_disagree_with_their_segments_info_are_errors(
    prediction, segments, message
):
    stats = PanopticStats(CATEGORIES)
    with pytest.raises(ValueError, match=message):
        stats.add_image(np.array([[1, 1]]), [gt(1, SKY, 2)], np.array(prediction), segments, "x")


def test_id_maps_of_any_integer_type():
    gt_ids = np.array([[1, -1, -1], [2**31 - 1, 1, 1]], np.int64)
    pred_ids = np.array([[5, 5, 6], [6, 6, 6]], np.uint16)
    pairs = sorted(zip(*pixel_pairs(gt_ids, pred_ids)))
    assert pairs == [(-1, 5, 1), (-1, 6, 1), (1, 5, 1), (1, 6, 2), (2**31 - 1, 6, 1)]
    # Negative predicted ids of an int32 map are named as they are, not as uint32.
    stats = PanopticStats(CATEGORIES)
    with pytest.raises(ValueError, match=r"segment ids \[-1\] are in the predicted"):
        stats.add_image(np.ones((1, 2), np.int32), [gt(1, SKY, 2)],
                        np.array([[-1, 3]], np.int32), [pred(3, SKY)])  # fmt: skip
    with pytest.raises(ValueError, match="must fit in 32 bits"):
        pixel_pairs(np.array([[2**32]]), np.array([[1]]))
    with pytest.raises(ValueError, match="must fit in 32 bits"):
        pixel_pairs(np.array([[-1, 2**31]]), np.array([[1, 1]]))
    with pytest.raises(TypeError, match="must be integers"):
        pixel_pairs(np.ones((1, 1)), np.ones((1, 1), np.int32))
