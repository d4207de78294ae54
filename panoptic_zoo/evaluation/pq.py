"""
Panoptic quality (PQ, SQ, RQ) with the exact semantics of panopticapi's ``pq_compute``, and the
category confusion of pixels (for mIoU) from the same per-image pass.

Per image, everything follows from one joint histogram: the number of pixels of every pair
(ground-truth segment id, predicted segment id). Panoptic images are a few flat regions, so the
histogram is built from runs of equal pairs along the rows, not from single pixels.

panopticapi's rules, all kept (:meth:`PanopticStats.add_image`):

* id 0 is VOID on both sides; ground-truth pixels whose id has no entry in ``segments_info``
  belong to no segment and are not VOID either.
* A predicted segment matches a non-crowd ground-truth segment of the same category when
  ``IoU > 0.5``, with the predicted segment's VOID pixels left out of the union; the match is
  then unique. The ground-truth area is the ``area`` of its annotation (pixels are counted only
  where the annotation has none); predicted areas are always counted.
* Unmatched non-crowd ground-truth segments are false negatives; crowd segments never count.
* An unmatched predicted segment is a false positive unless more than half of it lies on VOID
  or on the crowd region of its category (the last crowd segment of that category in
  ``segments_info``, as panopticapi keeps only one per category).
* Categories come from the ground truth's ``categories``; averages are over the categories with
  at least one TP, FP or FN, per-category values are 0 for the others. An average over no
  category (e.g. things on a stuff-only dataset), where panopticapi divides by zero, is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["VOID", "PanopticStats", "format_pq_table", "pixel_histogram"]

VOID = 0
IOU_UNIT = 2**53
GROUPS = (("All", None), ("Things", True), ("Stuff", False))


def pixel_histogram(
    gt_ids: np.ndarray,
    gt_segment_ids: np.ndarray,
    pred_ids: np.ndarray,
    pred_segment_ids: np.ndarray,
) -> np.ndarray:
    """
    Pixels of each (ground-truth segment, predicted segment) pair: a ``(G + 2) x (P + 1)`` int64
    matrix for ``G`` ground-truth and ``P`` predicted segment ids (sorted, unique, not VOID).
    Row and column 0 are VOID; the last row holds ground-truth ids missing from
    ``gt_segment_ids``. A predicted id missing from ``pred_segment_ids`` raises ValueError.
    """
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(
            f"ground truth is {gt_ids.shape[0]}x{gt_ids.shape[1]} pixels but the prediction "
            f"is {pred_ids.shape[0]}x{pred_ids.shape[1]}"
        )
    gt, pred = gt_ids.ravel(), pred_ids.ravel()
    # Panoptic images are flat regions: work on runs of equal (gt, pred) pairs along rows.
    run_start = np.empty(gt.size, bool)
    run_start[0] = True
    np.not_equal(gt[1:], gt[:-1], out=run_start[1:])
    run_start[1:] |= pred[1:] != pred[:-1]
    starts = np.flatnonzero(run_start)
    run_lengths = np.diff(starts, append=gt.size)
    gt_rows = _positions(gt[starts], gt_segment_ids, missing=len(gt_segment_ids) + 1)
    pred_columns = _positions(pred[starts], pred_segment_ids, missing=-1)
    if (pred_columns < 0).any():
        unknown = np.unique(pred[starts][pred_columns < 0]).tolist()
        raise ValueError(
            f"segment ids {unknown} are in the predicted segmentation but not in its "
            "segments_info"
        )
    columns = len(pred_segment_ids) + 1
    histogram = np.bincount(
        gt_rows * columns + pred_columns,
        weights=run_lengths,
        minlength=(len(gt_segment_ids) + 2) * columns,
    )
    return histogram.astype(np.int64).reshape(-1, columns)


def _positions(values: np.ndarray, sorted_ids: np.ndarray, missing: int) -> np.ndarray:
    """0 for VOID, 1 + index in ``sorted_ids`` for a listed id, ``missing`` for any other."""
    keys = np.concatenate(([VOID], sorted_ids))  # still sorted: listed ids are positive
    index = np.searchsorted(keys, values)
    # A sentinel past the end, which no id equals, catches values above every key.
    index[np.append(keys, -1)[index] != values] = missing
    return index


class PanopticStats:
    """
    Statistics of panoptic predictions against ground truth over a set of images: per category
    the summed IoU of matches, TP, FP and FN (what PQ needs), and the pixel confusion between
    ground-truth and predicted categories (what mIoU needs).

    ``a + b`` are the statistics of the union of two disjoint image sets: distributed evaluation
    gathers these, not images.
    """

    def __init__(self, categories: Sequence[Mapping[str, Any]]):
        """``categories``: the ground truth's COCO panoptic categories (id, name, isthing)."""
        self.categories = [
            {"id": c["id"], "name": c.get("name", str(c["id"])), "isthing": c["isthing"] == 1}
            for c in categories
        ]
        self._index = {c["id"]: k for k, c in enumerate(self.categories)}
        count = len(self.categories)
        # IoU sums are kept exact, as integers in units of 2**-53: every matched IoU is > 0.5,
        # hence a multiple of the float spacing there. Sums then do not depend on the order of
        # images or on how processes split them (panopticapi's float sums differ by rounding).
        self.iou_units = [0] * count
        self.tp = np.zeros(count, np.int64)
        self.fp = np.zeros(count, np.int64)
        self.fn = np.zeros(count, np.int64)
        # Rows: ground-truth category; columns: predicted category, the last one VOID.
        self.confusion = np.zeros((count, count + 1), np.int64)

    def add_image(
        self,
        gt_ids: np.ndarray,
        gt_segments: Iterable[Mapping[str, Any]],
        pred_ids: np.ndarray,
        pred_segments: Iterable[Mapping[str, Any]],
        image_id: Any = None,
    ) -> None:
        """
        Add one image: segment-id maps (H x W) and their ``segments_info`` with dataset category
        ids (ground truth: ``id, category_id, iscrowd, area``; prediction: ``id, category_id``).
        A prediction whose ids and ``segments_info`` disagree raises ValueError, as panopticapi.
        """
        where = f"image {image_id!r}"
        # One entry per id, the last listed winning, as panopticapi reads segments_info.
        gt_by_id = {s["id"]: s for s in gt_segments}
        if VOID in gt_by_id:
            raise ValueError(f"{where}: a ground-truth segment has id {VOID}, the VOID label")
        pred_by_id = {}
        for segment in pred_segments:
            segment_id, category = segment["id"], segment["category_id"]
            if segment_id == VOID or segment_id in pred_by_id:
                raise ValueError(
                    f"{where}: predicted segment id {segment_id} is "
                    + ("the VOID label" if segment_id == VOID else "listed twice")
                )
            if category not in self._index:
                raise ValueError(
                    f"{where}: predicted segment {segment_id} has category_id {category}, "
                    "which is not a category of the ground truth"
                )
            pred_by_id[segment_id] = category
        gt_order, pred_order = sorted(gt_by_id), sorted(pred_by_id)
        histogram = pixel_histogram(
            gt_ids, np.array(gt_order, np.int64), pred_ids, np.array(pred_order, np.int64)
        )
        # Rows 1..G and columns 1..P of the histogram follow gt_order and pred_order.
        pixels = histogram[1:-1, 1:]
        pred_area = histogram[:, 1:].sum(axis=0)
        on_void = histogram[0, 1:]
        if (pred_area == 0).any():
            empty = [p for p, area in zip(pred_order, pred_area.tolist()) if area == 0]
            raise ValueError(
                f"{where}: predicted segments_info lists ids {empty}, which cover no pixel"
            )
        gt = [gt_by_id[g] for g in gt_order]
        gt_category = np.array([self._index.get(s["category_id"], -1) for s in gt], np.intp)
        gt_crowd = np.array([s.get("iscrowd", 0) == 1 for s in gt], bool)
        gt_area = np.array(
            [s.get("area", n) for s, n in zip(gt, pixels.sum(axis=1).tolist())], np.float64
        )
        pred_category = np.array([self._index[pred_by_id[p]] for p in pred_order], np.intp)

        # gt_category is -1 for categories outside ``categories``: those never match.
        candidates = (
            (pixels > 0) & ~gt_crowd[:, None] & (gt_category[:, None] == pred_category[None, :])
        )
        union = pred_area[None, :] + gt_area[:, None] - pixels - on_void[None, :]
        iou = np.divide(pixels, union, out=np.zeros(pixels.shape), where=candidates)
        matched = candidates & (iou > 0.5)
        rows, columns = np.nonzero(matched)
        for k, units in zip(gt_category[rows].tolist(), (iou[rows, columns] * IOU_UNIT).tolist()):
            self.iou_units[k] += int(units)
        np.add.at(self.tp, gt_category[rows], 1)

        missed = ~matched.any(axis=1) & ~gt_crowd & (gt_category >= 0)
        np.add.at(self.fn, gt_category[missed], 1)

        # The crowd region of a category is its last crowd segment in segments_info.
        row_of = {g: row for row, g in enumerate(gt_order, start=1)}
        crowd_row = {
            s["category_id"]: row_of[g] for g, s in gt_by_id.items() if s.get("iscrowd", 0) == 1
        }
        on_crowd = np.array(
            [
                histogram[crowd_row[pred_by_id[p]], column] if pred_by_id[p] in crowd_row else 0
                for column, p in enumerate(pred_order, start=1)
            ],
            np.int64,
        )
        false_positive = ~matched.any(axis=0) & ((on_void + on_crowd) / pred_area <= 0.5)
        np.add.at(self.fp, pred_category[false_positive], 1)

        labelled = gt_category >= 0
        pred_column = np.concatenate(([len(self.categories)], pred_category))
        np.add.at(
            self.confusion,
            (gt_category[labelled][:, None], pred_column[None, :]),
            histogram[1:-1][labelled],
        )

    def __iadd__(self, other: PanopticStats) -> PanopticStats:
        if other.categories != self.categories:
            raise ValueError("cannot add panoptic statistics over different categories")
        self.iou_units = [a + b for a, b in zip(self.iou_units, other.iou_units)]
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.confusion += other.confusion
        return self

    def __add__(self, other: PanopticStats) -> PanopticStats:
        total = PanopticStats(self.categories)
        total += self
        total += other
        return total

    def pq_results(self) -> dict[str, Any]:
        """
        What panopticapi's ``pq_compute`` returns: ``{"All" | "Things" | "Stuff": {pq, sq, rq,
        n}, "per_class": {category id: {pq, sq, rq}}}`` (fractions, not percent).
        """
        per_class = {}
        for k, category in enumerate(self.categories):
            iou = self.iou_units[k] / IOU_UNIT
            tp, fp, fn = (int(a[k]) for a in (self.tp, self.fp, self.fn))
            if tp + fp + fn == 0:
                per_class[category["id"]] = None
                continue
            per_class[category["id"]] = {
                "pq": iou / (tp + 0.5 * fp + 0.5 * fn),
                "sq": iou / tp if tp != 0 else 0.0,
                "rq": tp / (tp + 0.5 * fp + 0.5 * fn),
            }
        results = {}
        for group, isthing in GROUPS:
            members = [
                per_class[c["id"]]
                for c in self.categories
                if (isthing is None or c["isthing"] == isthing) and per_class[c["id"]] is not None
            ]
            n = len(members)
            # Sequential sums in category order: the same rounding as panopticapi.
            results[group] = {
                key: (sum(m[key] for m in members) / n if n else math.nan)
                for key in ("pq", "sq", "rq")
            }
            results[group]["n"] = n
        results["per_class"] = {
            c: (r if r is not None else {"pq": 0.0, "sq": 0.0, "rq": 0.0})
            for c, r in per_class.items()
        }
        return results

    def semantic_results(self) -> dict[str, Any]:
        """
        Per-category IoU of pixels, ``TP / (TP + FP + FN)``, and their mean ``mIoU`` over the
        categories that occur in the ground truth or the prediction (fractions). A ground-truth
        pixel predicted VOID is a false negative of its category and no one's false positive.
        """
        tp = np.diag(self.confusion[:, :-1])
        union = self.confusion.sum(axis=1) + self.confusion[:, :-1].sum(axis=0) - tp
        present = union > 0
        iou = np.where(present, tp / np.maximum(union, 1), math.nan)
        return {
            "mIoU": float(iou[present].mean()) if present.any() else math.nan,
            "per_class": {c["id"]: float(v) for c, v in zip(self.categories, iou)},
        }


def format_pq_table(results: dict[str, Any]) -> str:
    """The table panopticapi prints: PQ, SQ, RQ in percent and the number of categories."""
    lines = ["{:10s}| {:>5s}  {:>5s}  {:>5s} {:>5s}".format("", "PQ", "SQ", "RQ", "N"), "-" * 38]
    for group, _ in GROUPS:
        r = results[group]
        lines.append(
            f"{group:10s}| {100 * r['pq']:5.1f}  {100 * r['sq']:5.1f}  {100 * r['rq']:5.1f} "
            f"{r['n']:5d}"
        )
    return "\n".join(lines)
