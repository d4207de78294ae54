"""
The default panoptic evaluator: PQ, mask AP of the panoptic thing segments and mIoU of the
panoptic categories, all from each image's ``panoptic_seg``, in one pass during inference.

Unlike detectron2's ``COCOPanopticEvaluator``, predictions never become PNG files: each image is
reduced at once to per-category statistics (:class:`~.pq.PanopticStats`, a few KiB) and, for AP,
to the RLEs of its thing segments; distributed evaluation gathers those. PQ equals panopticapi's
``pq_compute`` on the same predictions (to float rounding, see :mod:`.pq`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
from collections import OrderedDict

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .panoptic_png import open_segment_ids
from .pq import AREA_SIZES, PanopticStats, format_pq_table, scaled_area_bounds

__all__ = ["PanopticEvaluator", "segment_rles"]

logger = logging.getLogger(__name__)

COCO_AP_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def segment_rles(segment_ids_map: np.ndarray, segment_ids: list[int]) -> list[dict]:
    """
    The COCO RLE (compressed, as ``pycocotools.mask.encode`` gives) of the mask of each id in
    ``segment_ids``, from one run-length pass over the id map instead of one pass per mask.
    """
    height, width = segment_ids_map.shape
    flat = segment_ids_map.T.ravel()  # COCO RLEs run down the columns
    starts = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))
    ends = np.append(starts[1:], flat.size)
    values = flat[starts]
    rles = []
    for segment_id in segment_ids:
        mine = values == segment_id
        # Boundaries 0, start, end, start, end, ..., size: their differences are the RLE counts,
        # which begin with a (possibly empty) run of zeros.
        edges = np.empty(2 * int(mine.sum()) + 2, np.int64)
        edges[0], edges[-1] = 0, flat.size
        edges[1:-1:2], edges[2:-1:2] = starts[mine], ends[mine]
        counts = np.diff(edges).tolist()
        rles.append(
            mask_util.frPyObjects({"size": [height, width], "counts": counts}, height, width)
        )
    return rles


class PanopticEvaluator(DatasetEvaluator):
    """
    Evaluates ``panoptic_seg = (segment ids, segments_info)`` (separated or dataset category
    ids with ``isthing``) against the dataset's COCO panoptic ground truth (metadata
    ``panoptic_json``, ``panoptic_root``). Results, in percent, under ``"panoptic_seg"``:

    * ``PQ, SQ, RQ`` and their ``_th`` / ``_st`` variants (detectron2's keys), and per category
      ``PQ-<name>, SQ-<name>, RQ-<name>``;
    * the same by segment area, as COCO's APs/APm/APl (:mod:`.pq`): ``PQs, SQs, RQs`` (small),
      ``PQm, ...`` (medium), ``PQl, ...`` (large), each also ``_th`` / ``_st``. ``area_bounds``
      (pixels where medium and large begin) default to COCO's 32**2 and 96**2 scaled by the
      dataset's mean image area over COCO's 640x480;
    * ``mIoU`` and ``IoU-<name>``: the category of each pixel's predicted segment against the
      category of its ground-truth segment, over all dataset categories (things and stuff
      apart, crowd regions as their category); VOID ground truth is ignored, a pixel predicted
      VOID is a miss;
    * when the metadata has ``json_file`` (COCO instances) and every thing segment has a
      ``score``: ``AP, AP50, AP75, APs, APm, APl`` and ``AP-<name>``, COCO mask AP of the thing
      segments as instances (mask = segment, score = segment score).

    Values that are undefined for the data (e.g. AP of a category without ground truth) are left
    out, except the nine detectron2 keys, NaN where no category has any segment.
    """

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        area_bounds: tuple[float, float] | None = None,
    ):
        metadata = MetadataCatalog.get(dataset_name)
        with PathManager.open(metadata.panoptic_json) as f:
            gt_json = json.load(f)
        self._categories = gt_json["categories"]
        self._area_bounds = (
            tuple(area_bounds) if area_bounds else scaled_area_bounds(gt_json["images"])
        )
        self._gt_by_image = {ann["image_id"]: ann for ann in gt_json["annotations"]}
        self._panoptic_root = metadata.panoptic_root
        self._instances_json = getattr(metadata, "json_file", None)
        self._thing_dataset_id = {
            v: k for k, v in metadata.thing_dataset_id_to_contiguous_id.items()
        }
        self._stuff_dataset_id = {
            v: k for k, v in metadata.stuff_dataset_id_to_contiguous_id.items()
        }
        self._thing_ids = set(metadata.thing_dataset_id_to_contiguous_id)
        self._distributed = distributed

    def reset(self):
        self._stats = PanopticStats(self._categories, self._area_bounds)
        self._image_ids = []
        self._detections = []
        self._unscored_things = 0

    def _dataset_category(self, segment: dict) -> int:
        if "isthing" not in segment:  # the model already speaks dataset ids
            return segment["category_id"]
        ids = self._thing_dataset_id if segment["isthing"] else self._stuff_dataset_id
        return ids[segment["category_id"]]

    def process(self, inputs, outputs):
        for input, output in zip(inputs, outputs):
            ids, segments_info = output["panoptic_seg"]
            if segments_info is None:
                raise ValueError(
                    "PanopticEvaluator needs panoptic_seg with segments_info; for the "
                    "category * label_divisor + instance form use TEST.PANOPTIC_EVALUATOR "
                    "panopticapi"
                )
            ids = ids.cpu().numpy()
            image_id = input["image_id"]
            if image_id not in self._gt_by_image:
                raise ValueError(f"image {image_id!r} has no annotation in the panoptic JSON")
            gt_ann = self._gt_by_image[image_id]
            gt_path = os.path.join(self._panoptic_root, gt_ann["file_name"])
            with PathManager.open(gt_path, "rb") as f:
                gt_ids = open_segment_ids(f.read(), gt_path)
            categories = [self._dataset_category(s) for s in segments_info]
            self._stats.add_image(
                gt_ids,
                gt_ann["segments_info"],
                ids,
                [{"id": s["id"], "category_id": c} for s, c in zip(segments_info, categories)],
                image_id=image_id,
            )
            self._image_ids.append(image_id)
            if self._instances_json is not None:
                self._add_detections(image_id, ids, segments_info, categories)

    def _add_detections(self, image_id, ids: np.ndarray, segments_info, categories) -> None:
        things = [(s, c) for s, c in zip(segments_info, categories) if c in self._thing_ids]
        scored = [(s, c) for s, c in things if "score" in s]
        self._unscored_things += len(things) - len(scored)
        rles = segment_rles(ids, [s["id"] for s, _ in scored])
        self._detections.extend(
            {"image_id": image_id, "category_id": c, "segmentation": rle, "score": s["score"]}
            for (s, c), rle in zip(scored, rles)
        )

    def evaluate(self):
        parts = [(self._stats, self._image_ids, self._detections, self._unscored_things)]
        if self._distributed:
            comm.synchronize()
            parts = comm.gather(parts[0], dst=0)
            if not comm.is_main_process():
                return None
        stats = sum((p[0] for p in parts), PanopticStats(self._categories, self._area_bounds))
        image_ids = [i for p in parts for i in p[1]]
        detections = [d for p in parts for d in p[2]]
        unscored = sum(p[3] for p in parts)

        results = self._pq_metrics(stats)
        results.update(self._semantic_metrics(stats))
        if self._instances_json is not None:
            if unscored:
                logger.warning(
                    f"{unscored} predicted thing segments have no 'score': no panoptic AP"
                )
            else:
                results.update(self._ap_metrics(image_ids, detections))
        return OrderedDict({"panoptic_seg": results})

    def _pq_metrics(self, stats: PanopticStats) -> dict[str, float]:
        pq = stats.pq_results()
        logger.info("Panoptic evaluation results:\n" + format_pq_table(pq))
        results = {}
        for suffix, group in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
            for metric in ("PQ", "SQ", "RQ"):
                results[metric + suffix] = 100 * pq[group][metric.lower()]
                for size in AREA_SIZES:  # left out where no category has a segment that size
                    value = pq["sizes"][size][group][metric.lower()]
                    if not math.isnan(value):
                        results[f"{metric}{size[0]}{suffix}"] = 100 * value
        counted = stats.tp + stats.fp + stats.fn > 0
        for category, present in zip(stats.categories, counted):
            if present:
                for metric in ("PQ", "SQ", "RQ"):
                    value = pq["per_class"][category["id"]][metric.lower()]
                    results[f"{metric}-{category['name']}"] = 100 * value
        return results

    def _semantic_metrics(self, stats: PanopticStats) -> dict[str, float]:
        semantic = stats.semantic_results()
        results = {"mIoU": 100 * semantic["mIoU"]}
        for category in stats.categories:
            iou = semantic["per_class"][category["id"]]
            if not math.isnan(iou):
                results[f"IoU-{category['name']}"] = 100 * iou
        return results

    def _ap_metrics(self, image_ids: list, detections: list[dict]) -> dict[str, float]:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' progress lines
            coco_gt = COCO(PathManager.get_local_path(self._instances_json))
            if detections:
                coco_dt = coco_gt.loadRes(detections)
            else:  # loadRes cannot take none; no detection still scores 0 where there is GT
                coco_dt = COCO()
                coco_dt.dataset = {**coco_gt.dataset, "annotations": []}
                coco_dt.createIndex()
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            coco_eval = COCOeval(coco_gt, coco_dt, "segm")
            coco_eval.params.imgIds = sorted(set(image_ids))
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        logger.info("Mask AP of the panoptic thing segments:\n" + summary.getvalue())
        # -1 marks a metric without ground truth (e.g. no large objects).
        results = {
            name: 100 * float(value)
            for name, value in zip(COCO_AP_NAMES, coco_eval.stats)
            if value >= 0
        }
        # precision: [IoU threshold, recall, category, area range, max detections]
        precision = coco_eval.eval["precision"]
        for k, category_id in enumerate(coco_eval.params.catIds):
            values = precision[:, :, k, 0, -1]
            values = values[values > -1]
            if values.size:
                name = coco_gt.cats[category_id]["name"]
                results[f"AP-{name}"] = 100 * float(values.mean())
        return results
