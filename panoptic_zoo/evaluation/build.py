"""Evaluators picked from what a dataset's metadata says its ground truth is."""

from __future__ import annotations

from detectron2.data import MetadataCatalog
from detectron2.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
)

from .panoptic_evaluator import PanopticEvaluator

__all__ = ["PANOPTIC_EVALUATORS", "build_evaluators"]

PANOPTIC_EVALUATORS = ("panoptic_zoo", "panopticapi")


def build_evaluators(cfg, dataset_name: str, output_folder: str) -> DatasetEvaluators:
    """
    PQ when the metadata has ``panoptic_json``: by default (``TEST.PANOPTIC_EVALUATOR
    "panoptic_zoo"``) :class:`PanopticEvaluator`, which also reports mIoU and, with
    ``json_file``, the mask AP of the panoptic thing segments, and PQ by segment area
    (``TEST.PQ_AREA_BOUNDS``); ``"panopticapi"`` selects
    detectron2's ``COCOPanopticEvaluator`` (PQ only). Box and mask AP of the predicted
    ``instances`` when the metadata has ``json_file`` (COCO instances) and the model predicts
    instances (``MODEL.MASK_ON``); mIoU of the predicted ``sem_seg`` when it has
    ``sem_seg_root``.
    """
    metadata = MetadataCatalog.get(dataset_name)
    evaluators = []
    if hasattr(metadata, "panoptic_json"):
        choice = cfg.TEST.PANOPTIC_EVALUATOR
        if choice == "panoptic_zoo":
            area_bounds = cfg.TEST.PQ_AREA_BOUNDS
            if area_bounds and len(area_bounds) != 2:
                raise ValueError(
                    f"TEST.PQ_AREA_BOUNDS is {list(area_bounds)}; give two areas in pixels, "
                    "[small-to-medium, medium-to-large], or [] for COCO's scaled to the dataset"
                )
            evaluators.append(PanopticEvaluator(dataset_name, area_bounds=area_bounds or None))
        elif choice == "panopticapi":
            evaluators.append(COCOPanopticEvaluator(dataset_name, output_folder))
        else:
            raise ValueError(
                f"TEST.PANOPTIC_EVALUATOR is {choice!r}; expected one of {PANOPTIC_EVALUATORS}"
            )
    if hasattr(metadata, "json_file") and cfg.MODEL.MASK_ON:
        evaluators.append(
            COCOEvaluator(dataset_name, tasks=("bbox", "segm"), output_dir=output_folder)
        )
    if hasattr(metadata, "sem_seg_root"):
        evaluators.append(SemSegEvaluator(dataset_name, output_dir=output_folder))
    if not evaluators:
        raise ValueError(
            f"dataset {dataset_name!r} has no ground truth to evaluate against: its metadata "
            "names none of panoptic_json, json_file (with MODEL.MASK_ON) or sem_seg_root"
        )
    return DatasetEvaluators(evaluators)
