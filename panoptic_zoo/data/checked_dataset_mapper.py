"""
``CheckedDatasetMapper``: detectron2's ``DatasetMapper`` (COCO-style instance ``annotations`` +
semantic PNG, e.g. detectron2's ``*_panoptic_separated`` datasets) with the checks of the panoptic
mappers. detectron2 silently drops boxes outside the image or with NaN coordinates, swaps the
corners of inverted boxes, passes unknown classes to the model and converts a color semantic PNG
to gray levels; here each of these is an :class:`AnnotationError` naming the file and annotation.
"""

from __future__ import annotations

import copy
import math
from numbers import Real
from typing import Any

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from .datasets.panoptic import AnnotationError
from .mappers import DATASET_MAPPER_REGISTRY, read_image_checked, read_label_png

__all__ = ["CheckedDatasetMapper", "check_instance_annotations"]


def check_instance_annotations(
    dataset_dict: dict[str, Any], num_classes: int | None, needs_masks: bool
) -> None:
    """
    Raise :class:`AnnotationError` unless every non-crowd annotation of ``dataset_dict`` has a
    finite, non-empty absolute box that overlaps the image, a class in ``[0, num_classes)``
    (any non-negative one if ``num_classes`` is None) and, when ``needs_masks``, a well-formed
    segmentation. Overlapping boxes and boxes that reach out of the image are fine (the latter
    are clipped).
    """
    file_name = dataset_dict["file_name"]
    width, height = dataset_dict["width"], dataset_dict["height"]
    annotations = dataset_dict["annotations"]
    if not isinstance(annotations, list):
        raise AnnotationError(f"{file_name}: 'annotations' is a {type(annotations).__name__}")
    for index, annotation in enumerate(annotations):
        where = f"{file_name}: annotations[{index}]"
        if not isinstance(annotation, dict):
            raise AnnotationError(f"{where} is a {type(annotation).__name__}, not a dict")
        iscrowd = annotation.get("iscrowd", 0)
        if iscrowd not in (0, 1):
            raise AnnotationError(f"{where} has iscrowd {iscrowd!r}, not 0 or 1")
        if iscrowd:
            continue  # detectron2 drops crowd annotations from the instances
        x0, y0, x1, y1 = _absolute_xyxy(annotation, where)
        if not (x0 < x1 and y0 < y1):
            raise AnnotationError(f"{where} has an empty or inverted box {annotation['bbox']}")
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            raise AnnotationError(
                f"{where} has box {annotation['bbox']} entirely outside the {width}x{height} image"
            )
        category = annotation.get("category_id")
        if not isinstance(category, int) or isinstance(category, bool):
            raise AnnotationError(f"{where} has category_id {category!r}, not an integer")
        if category < 0 or (num_classes is not None and category >= num_classes):
            known = "" if num_classes is None else f" 0..{num_classes - 1}"
            raise AnnotationError(
                f"{where} has category_id {category}, outside the dataset's thing classes{known}"
            )
        if needs_masks:
            _check_segmentation(annotation, where, width, height)


def _absolute_xyxy(annotation: dict, where: str) -> tuple[float, ...]:
    box, mode = annotation.get("bbox"), annotation.get("bbox_mode")
    numbers = isinstance(box, (list, tuple)) and all(
        isinstance(v, Real) and not isinstance(v, bool) for v in box
    )
    if not numbers or len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise AnnotationError(f"{where} has bbox {box!r}, expected 4 finite numbers")
    if mode not in (BoxMode.XYXY_ABS, BoxMode.XYWH_ABS):
        raise AnnotationError(f"{where} has bbox_mode {mode!r}, expected XYXY_ABS or XYWH_ABS")
    x0, y0, x1, y1 = (float(v) for v in box)
    if mode == BoxMode.XYWH_ABS:
        x1, y1 = x0 + x1, y0 + y1
    return x0, y0, x1, y1


def _check_segmentation(annotation: dict, where: str, width: int, height: int) -> None:
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, dict):  # COCO RLE
        if list(segmentation.get("size", ())) != [height, width] or "counts" not in segmentation:
            raise AnnotationError(
                f"{where} has an RLE mask that is not of size [{height}, {width}]"
            )
        return
    if isinstance(segmentation, np.ndarray):
        if segmentation.shape != (height, width):
            raise AnnotationError(f"{where} has a mask of shape {segmentation.shape}")
        return
    polygons_ok = isinstance(segmentation, list) and len(segmentation) > 0
    for polygon in segmentation if polygons_ok else ():
        points = isinstance(polygon, list) and all(
            isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v) for v in polygon
        )
        polygons_ok &= points and len(polygon) >= 6 and len(polygon) % 2 == 0
    if not polygons_ok:
        raise AnnotationError(
            f"{where} has segmentation {_short(segmentation)}; masks are on (MODEL.MASK_ON), so it "
            "must be polygons of at least 3 finite (x, y) points, an RLE or a mask"
        )
    xs = [x for polygon in segmentation for x in polygon[0::2]]
    ys = [y for polygon in segmentation for y in polygon[1::2]]
    if max(xs) <= 0 or max(ys) <= 0 or min(xs) >= width or min(ys) >= height:
        raise AnnotationError(f"{where} has polygons entirely outside the {width}x{height} image")


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


@DATASET_MAPPER_REGISTRY.register()
class CheckedDatasetMapper(DatasetMapper):
    """
    detectron2's ``DatasetMapper`` with checked inputs: images read by
    :func:`~panoptic_zoo.data.mappers.read_image_checked`, semantic PNGs by
    :func:`~panoptic_zoo.data.mappers.read_label_png` (labels as stored), and instance
    annotations checked by :func:`check_instance_annotations` before any transform.
    """

    @configurable
    def __init__(self, is_train: bool = True, *, num_classes: int | None, **kwargs):
        super().__init__(is_train, **kwargs)
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        # The training dataset's classes, whichever head (ROI heads, Panoptic FCN's kernels, ...)
        # predicts them: an id beyond them is wrong for every method.
        thing_classes = None
        if cfg.DATASETS.TRAIN:
            thing_classes = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes")
        return {
            **super().from_config(cfg, is_train),
            "num_classes": None if thing_classes is None else len(thing_classes),
        }

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        # The steps of DatasetMapper.__call__, with the checked readers.
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_image_checked(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        if self.is_train and "annotations" in dataset_dict:
            check_instance_annotations(dataset_dict, self.num_classes, self.use_instance_mask)
        sem_seg_file = dataset_dict.pop("sem_seg_file_name", None)
        sem_seg = None
        if sem_seg_file is not None:
            sem_seg = read_label_png(sem_seg_file)
            if sem_seg.shape != image.shape[:2]:
                raise AnnotationError(
                    f"{sem_seg_file}: semantic PNG is {sem_seg.shape[1]}x{sem_seg.shape[0]} (WxH) "
                    f"but image {dataset_dict['file_name']} is {image.shape[1]}x{image.shape[0]}"
                )
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = self.augmentations(aug_input)
        image, sem_seg = aug_input.image, aug_input.sem_seg
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg.astype("long"))
        if self.proposal_topk is not None:
            utils.transform_proposals(
                dataset_dict, image.shape[:2], transforms, proposal_topk=self.proposal_topk
            )
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image.shape[:2])
        return dataset_dict
