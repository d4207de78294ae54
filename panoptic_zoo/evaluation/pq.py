"""
Panoptic quality (PQ, SQ, RQ) with the exact semantics of panopticapi's ``pq_compute``, and the
category confusion of pixels (for mIoU) from the same per-image pass.

Per image, everything follows from one joint histogram: the number of pixels of every pair
(ground-truth segment id, predicted segment id), counted by a C kernel (``_pq_kernels.c``) over
runs of equal pairs along the rows, straight from PNG data where the ids come from a file (by
NumPy's ``unique`` where the C extension is not built).

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

PQ by segment area (small / medium / large), not in panopticapi, from the same pass: every
match, miss and false positive also counts in one area bucket, that of the ground-truth segment
for a TP or FN (its area as above) and that of the predicted segment for an FP (all its pixels).
This is COCO's rule for APs/APm/APl (ground truth by its area, unmatched detections by theirs),
so a method is neither credited nor blamed in a bucket for segments of another size. Buckets are
half-open, ``[0, small)``, ``[small, medium)``, ``[medium, inf)``, so each segment is in exactly
one and the bucket counts add up to the overall ones; PQ, SQ and RQ of a bucket are averaged
over the categories with a TP, FP or FN in that bucket, exactly as the overall ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .panoptic_png import PQ_KERNELS, InflatedPng

__all__ = [
    "AREA_SIZES",
    "COCO_AREA_BOUNDS",
    "VOID",
    "PanopticStats",
    "format_pq_table",
    "pixel_pairs",
    "scaled_area_bounds",
]

VOID = 0
IOU_UNIT = 2**53
GROUPS = (("All", None), ("Things", True), ("Stuff", False))
AREA_SIZES = ("small", "medium", "large")
# COCO's object size bounds in pixels (32**2 and 96**2), for COCO's images: those are at most
# 640 px on a side, most 640x480, the area the bounds are scaled from for other datasets.
COCO_AREA_BOUNDS = (32.0**2, 96.0**2)
COCO_IMAGE_AREA = 640 * 480
# A segment-id map: an (H, W) integer array or a PNG's inflated data (read by the C kernel).
SegmentIds = np.ndarray | InflatedPng


def pixel_pairs(gt_ids: SegmentIds, pred_ids: SegmentIds) -> tuple[list, list, list]:
    """
    The (ground-truth id, predicted id) pairs that occur in two segment-id maps of the same
    size, and their pixel counts, in no particular order: three lists of ints.
    """
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(
            f"ground truth is {gt_ids.shape[0]}x{gt_ids.shape[1]} pixels but the prediction "
            f"is {pred_ids.shape[0]}x{pred_ids.shape[1]}"
        )
    gt, pred = _kernel_ids(gt_ids), _kernel_ids(pred_ids)
    if PQ_KERNELS is None:
        return _numpy_pixel_pairs(gt, pred)
    pair_gt, pair_pred, pixels = PQ_KERNELS.pair_counts(gt, pred, *gt_ids.shape)
    return (
        np.frombuffer(pair_gt, _kernel_dtype(gt)).tolist(),
        np.frombuffer(pair_pred, _kernel_dtype(pred)).tolist(),
        np.frombuffer(pixels, np.int64).tolist(),
    )


def _numpy_pixel_pairs(gt: np.ndarray, pred: np.ndarray) -> tuple[list, list, list]:
    """:func:`pixel_pairs` of two 32-bit id arrays, without the C extension."""
    pairs = gt.astype(np.uint32).astype(np.uint64) << np.uint64(32) | pred.astype(np.uint32)
    keys, pixels = np.unique(pairs, return_counts=True)
    pair_gt = (keys >> np.uint64(32)).astype(np.uint32).astype(_kernel_dtype(gt))
    pair_pred = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32).astype(_kernel_dtype(pred))
    return pair_gt.tolist(), pair_pred.tolist(), pixels.tolist()


def _kernel_dtype(ids) -> type:
    """The kernel returns ids as uint32: read them back as int32 where the input was signed."""
    return np.int32 if isinstance(ids, np.ndarray) and ids.dtype == np.int32 else np.uint32


def _kernel_ids(ids: SegmentIds) -> np.ndarray | tuple[bytes, int]:
    """What the C kernel reads: 32-bit ids in C order, or an inflated PNG's data."""
    if isinstance(ids, InflatedPng):
        return ids.data, ids.channels
    if ids.dtype in (np.int32, np.uint32):
        return np.ascontiguousarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"segment ids must be integers, not {ids.dtype}")
    lowest, highest = (int(ids.min()), int(ids.max())) if ids.size else (0, 0)
    signed = lowest < 0
    if lowest < -(2**31) or highest >= (2**31 if signed else 2**32):
        raise ValueError("segment ids must fit in 32 bits")
    return ids.astype(np.int32 if signed else np.uint32)


def scaled_area_bounds(images: Iterable[Mapping[str, Any]]) -> tuple[float, float]:
    """
    COCO's size bounds scaled by the mean image area of a COCO-format ``images`` list (each
    with ``height`` and ``width``) over COCO's 640x480: objects are small, medium or large
    relative to the image, as on COCO.
    """
    areas = []
    for image in images:
        if "height" not in image or "width" not in image:
            raise ValueError(
                f"image {image.get('id')!r} of the panoptic JSON has no height/width, which "
                "scale COCO's size bounds to the dataset: add them, or give the bounds "
                "(TEST.PQ_AREA_BOUNDS)"
            )
        areas.append(image["height"] * image["width"])
    if not areas:
        raise ValueError("the panoptic JSON lists no images to scale COCO's size bounds by")
    scale = sum(areas) / len(areas) / COCO_IMAGE_AREA
    return (COCO_AREA_BOUNDS[0] * scale, COCO_AREA_BOUNDS[1] * scale)


class PanopticStats:
    """
    Statistics of panoptic predictions against ground truth over a set of images: per category
    the summed IoU of matches, TP, FP and FN (what PQ needs), and the pixel confusion between
    ground-truth and predicted categories (what mIoU needs).

    ``a + b`` are the statistics of the union of two disjoint image sets: distributed evaluation
    gathers these, not images.
    """

    def __init__(
        self,
        categories: Sequence[Mapping[str, Any]],
        area_bounds: tuple[float, float] = COCO_AREA_BOUNDS,
    ):
        """
        ``categories``: the ground truth's COCO panoptic categories (id, name, isthing);
        ``area_bounds``: the segment areas (pixels) where medium and large segments begin.
        """
        small, medium = (float(b) for b in area_bounds)
        if not 0 < small <= medium:
            raise ValueError(f"area bounds must be 0 < small <= medium, not {tuple(area_bounds)}")
        self.area_bounds = (small, medium)
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
        # The same per area bucket (AREA_SIZES): rows are buckets.
        self.size_iou_units = [[0] * count for _ in AREA_SIZES]
        self.size_tp = np.zeros((len(AREA_SIZES), count), np.int64)
        self.size_fp = np.zeros((len(AREA_SIZES), count), np.int64)
        self.size_fn = np.zeros((len(AREA_SIZES), count), np.int64)
        # Rows: ground-truth category; columns: predicted category, the last one VOID.
        self.confusion = np.zeros((count, count + 1), np.int64)

    def _size(self, area: int) -> int:
        """The row of ``area`` in the per-size statistics."""
        return (area >= self.area_bounds[0]) + (area >= self.area_bounds[1])

    def add_image(
        self,
        gt_ids: SegmentIds,
        gt_segments: Iterable[Mapping[str, Any]],
        pred_ids: SegmentIds,
        pred_segments: Iterable[Mapping[str, Any]],
        image_id: Any = None,
    ) -> None:
        """
        Add one image: segment-id maps (H x W arrays, or :class:`~.panoptic_png.InflatedPng`
        from :func:`~.panoptic_png.open_segment_ids`) and their ``segments_info`` with dataset
        category ids (ground truth: ``id, category_id, iscrowd, area``; prediction: ``id,
        category_id``).
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
        pair_gt, pair_pred, pair_pixels = pixel_pairs(gt_ids, pred_ids)
        unknown = {p for p in pair_pred if p != VOID and p not in pred_by_id}
        if unknown:
            raise ValueError(
                f"{where}: segment ids {sorted(unknown)} are in the predicted segmentation but "
                "not in its segments_info"
            )
        # Per-image work is over the few dozen pairs, in plain Python: faster than numpy here.
        # Categories as indices into ``categories``; -1 for a ground-truth category outside.
        gt_category = {g: self._index.get(s["category_id"], -1) for g, s in gt_by_id.items()}
        pred_category = {p: self._index[c] for p, c in pred_by_id.items()}
        void_column = len(self.categories)
        columns = void_column + 1
        pred_area = dict.fromkeys(pred_by_id, 0)
        on_void = dict.fromkeys(pred_by_id, 0)
        gt_pixels = dict.fromkeys(gt_by_id, 0)
        overlaps = []  # (ground-truth id, predicted id, pixels), both segments listed
        confusion_index, confusion_pixels = [], []  # flat (gt category, pred category)
        for g, p, pixels in zip(pair_gt, pair_pred, pair_pixels):
            if p != VOID:
                pred_area[p] += pixels
                if g == VOID:
                    on_void[p] += pixels
            k = gt_category.get(g)
            if k is not None:  # a listed ground-truth segment
                gt_pixels[g] += pixels
                if p != VOID:
                    overlaps.append((g, p, pixels))
                if k >= 0:  # mIoU counts listed segments of known category, crowd included
                    confusion_index.append(
                        k * columns + (pred_category[p] if p != VOID else void_column)
                    )
                    confusion_pixels.append(pixels)
        empty = sorted(p for p, area in pred_area.items() if area == 0)
        if empty:
            raise ValueError(
                f"{where}: predicted segments_info lists ids {empty}, which cover no pixel"
            )
        np.add.at(self.confusion.reshape(-1), confusion_index, confusion_pixels)

        gt_crowd = {g for g, s in gt_by_id.items() if s.get("iscrowd", 0) == 1}
        # The annotated area; counted where there is none, as panopticapi would need it.
        gt_area = {
            g: gt_pixels[g] if s.get("area") is None else s["area"] for g, s in gt_by_id.items()
        }
        matched_gt, matched_pred = set(), set()
        for g, p, pixels in overlaps:
            k = gt_category[g]
            if k < 0 or k != pred_category[p] or g in gt_crowd:
                continue
            iou = pixels / (pred_area[p] + gt_area[g] - pixels - on_void[p])
            if iou > 0.5:  # then the match is unique
                units = int(iou * IOU_UNIT)
                size = self._size(gt_area[g])
                self.iou_units[k] += units
                self.size_iou_units[size][k] += units
                self.tp[k] += 1
                self.size_tp[size, k] += 1
                matched_gt.add(g)
                matched_pred.add(p)
        for g, k in gt_category.items():
            if k >= 0 and g not in matched_gt and g not in gt_crowd:
                self.fn[k] += 1
                self.size_fn[self._size(gt_area[g]), k] += 1

        # The crowd region of a category is its last crowd segment in segments_info.
        crowd_of = {gt_by_id[g]["category_id"]: g for g in gt_by_id if g in gt_crowd}
        on_crowd = {p: pixels for g, p, pixels in overlaps if crowd_of.get(pred_by_id[p]) == g}
        for p, k in pred_category.items():
            if p not in matched_pred and (on_void[p] + on_crowd.get(p, 0)) / pred_area[p] <= 0.5:
                self.fp[k] += 1
                self.size_fp[self._size(pred_area[p]), k] += 1

    def __iadd__(self, other: PanopticStats) -> PanopticStats:
        if other.categories != self.categories:
            raise ValueError("cannot add panoptic statistics over different categories")
        if other.area_bounds != self.area_bounds:
            raise ValueError(
                f"cannot add panoptic statistics over different area bounds "
                f"({self.area_bounds} and {other.area_bounds})"
            )
        self.iou_units = [a + b for a, b in zip(self.iou_units, other.iou_units)]
        self.size_iou_units = [
            [a + b for a, b in zip(mine, theirs)]
            for mine, theirs in zip(self.size_iou_units, other.size_iou_units)
        ]
        for name in ("tp", "fp", "fn", "size_tp", "size_fp", "size_fn", "confusion"):
            getattr(self, name).__iadd__(getattr(other, name))
        return self

    def __add__(self, other: PanopticStats) -> PanopticStats:
        total = PanopticStats(self.categories, self.area_bounds)
        total += self
        total += other
        return total

    def pq_results(self) -> dict[str, Any]:
        """
        What panopticapi's ``pq_compute`` returns: ``{"All" | "Things" | "Stuff": {pq, sq, rq,
        n}, "per_class": {category id: {pq, sq, rq}}}`` (fractions, not percent), and the same
        groups per area bucket: ``"sizes": {"small" | "medium" | "large": {"All": ...}}``, with
        the bounds under ``"area_bounds"``.
        """
        per_class = self._per_class(self.iou_units, self.tp, self.fp, self.fn)
        results = self._group_averages(per_class)
        results["per_class"] = {
            c: (r if r is not None else {"pq": 0.0, "sq": 0.0, "rq": 0.0})
            for c, r in per_class.items()
        }
        results["sizes"] = {
            size: self._group_averages(
                self._per_class(
                    self.size_iou_units[k], self.size_tp[k], self.size_fp[k], self.size_fn[k]
                )
            )
            for k, size in enumerate(AREA_SIZES)
        }
        results["area_bounds"] = list(self.area_bounds)
        return results

    def _per_class(self, iou_units, tp, fp, fn) -> dict[Any, dict[str, float] | None]:
        """PQ, SQ and RQ per category id; None for a category without TP, FP or FN."""
        per_class = {}
        for k, category in enumerate(self.categories):
            iou = iou_units[k] / IOU_UNIT
            tp_k, fp_k, fn_k = int(tp[k]), int(fp[k]), int(fn[k])
            if tp_k + fp_k + fn_k == 0:
                per_class[category["id"]] = None
                continue
            per_class[category["id"]] = {
                "pq": iou / (tp_k + 0.5 * fp_k + 0.5 * fn_k),
                "sq": iou / tp_k if tp_k != 0 else 0.0,
                "rq": tp_k / (tp_k + 0.5 * fp_k + 0.5 * fn_k),
            }
        return per_class

    def _group_averages(self, per_class: dict) -> dict[str, dict[str, float]]:
        """The mean PQ, SQ, RQ and the number of categories of every group (GROUPS)."""
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
    """
    The table panopticapi prints: PQ, SQ, RQ in percent and the number of categories; then, where
    ``results`` has them, PQ (all, things, stuff) and the number of categories per area bucket.
    """
    lines = ["{:10s}| {:>5s}  {:>5s}  {:>5s} {:>5s}".format("", "PQ", "SQ", "RQ", "N"), "-" * 38]
    for group, _ in GROUPS:
        r = results[group]
        lines.append(
            f"{group:10s}| {100 * r['pq']:5.1f}  {100 * r['sq']:5.1f}  {100 * r['rq']:5.1f} "
            f"{r['n']:5d}"
        )
    if "sizes" in results:
        small, medium = results["area_bounds"]
        lines += [
            "",
            f"By segment area (pixels; small < {small:g} <= medium < {medium:g} <= large):",
            "{:10s}| {:>5s}  {:>5s}  {:>5s} {:>5s}".format("", "PQ", "PQ_th", "PQ_st", "N"),
            "-" * 38,
        ]
        for size in AREA_SIZES:
            r = results["sizes"][size]
            pq = [100 * r[group]["pq"] for group, _ in GROUPS]
            lines.append(f"{size:10s}| {pq[0]:5.1f}  {pq[1]:5.1f}  {pq[2]:5.1f} {r['All']['n']:5d}")
    return "\n".join(lines)
