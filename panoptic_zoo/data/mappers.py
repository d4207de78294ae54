"""
Dataset mappers, picked by name from ``cfg.INPUT.DATASET_MAPPER_NAME`` through
:data:`DATASET_MAPPER_REGISTRY`, so a method brings its own mapper without touching the trainer.

* ``DatasetMapper``: detectron2's own, for datasets with instance ``annotations`` and
  ``sem_seg_file_name`` (e.g. detectron2's ``*_panoptic_separated`` COCO datasets).
* ``COCOPanopticDatasetMapper``: for any COCO-panoptic-format dataset (``pan_seg_file_name`` +
  ``segments_info``): derives Panoptic FPN's targets, instances (boxes, classes, bit masks) and
  a semantic map with all things merged into class 0, from the panoptic PNG itself, after
  checking that the PNG and its ``segments_info`` agree.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Instances
from detectron2.utils.registry import Registry

from .panoptic_format import open_image_checked, read_label_png, read_panoptic_png

__all__ = [
    "DATASET_MAPPER_REGISTRY",
    "build_dataset_mapper",
    "build_panoptic_augmentations",
    "open_image_checked",
    "read_image_checked",
    "read_label_png",
    "read_panoptic_png",
    "map_panoptic_image",
    "COCOPanopticDatasetMapper",
]

DATASET_MAPPER_REGISTRY = Registry("DATASET_MAPPER")
DATASET_MAPPER_REGISTRY.__doc__ = """
Dataset mappers: callables built as ``mapper(cfg, is_train)`` that turn a dataset dict into
model inputs. The mapper named by ``cfg.INPUT.DATASET_MAPPER_NAME`` is used for training and
(with ``is_train=False``) for evaluation.
"""
DATASET_MAPPER_REGISTRY.register(DatasetMapper)


# Mappers renamed since configs were first written: old name -> new name.
_RENAMED_MAPPERS = {"PanopticFPNDatasetMapper": "COCOPanopticDatasetMapper"}


def build_dataset_mapper(cfg, is_train: bool):
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name in _RENAMED_MAPPERS:
        raise ValueError(
            f"INPUT.DATASET_MAPPER_NAME: {name} was renamed; set it to {_RENAMED_MAPPERS[name]}"
        )
    return DATASET_MAPPER_REGISTRY.get(name)(cfg, is_train)


def read_image_checked(file_name: str, format: str | None = None) -> np.ndarray:
    """detectron2's ``read_image`` (EXIF orientation, format), checked by open_image_checked."""
    return utils.convert_PIL_to_numpy(open_image_checked(file_name), format)


def build_panoptic_augmentations(cfg, is_train: bool) -> list:
    """
    detectron2's resize (+ flip in training), with ``INPUT.CROP`` applied after the resize and
    before the flip in training: crops of a rescaled image, as Cityscapes and Panoptic-DeepLab
    training do (detectron2's ``DatasetMapper`` crops before resizing instead).
    """
    augmentations = utils.build_augmentation(cfg, is_train)
    if cfg.INPUT.CROP.ENABLED and is_train:
        augmentations.insert(1, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    return augmentations


def map_panoptic_image(
    dataset_dict: dict[str, Any],
    augmentations: T.AugmentationList,
    image_format: str,
    is_train: bool,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """
    The first half of every panoptic mapper: a copy of ``dataset_dict`` with the checked, augmented
    ``image`` tensor, and (for training) the panoptic PNG's segment ids augmented together with it.
    At test time the ids are None and the annotations are dropped from the copy.
    """
    dataset_dict = copy.deepcopy(dataset_dict)
    image = read_image_checked(dataset_dict["file_name"], format=image_format)
    utils.check_image_size(dataset_dict, image)
    segment_ids = read_panoptic_png(dataset_dict, image.shape[:2]) if is_train else None
    # float64 holds every 24-bit id exactly and goes through detectron2's nearest resize.
    aug_input = T.AugInput(
        image, sem_seg=None if segment_ids is None else segment_ids.astype(np.float64)
    )
    augmentations(aug_input)
    dataset_dict["image"] = _image_tensor(aug_input.image)
    if segment_ids is None:
        for key in ("pan_seg_file_name", "segments_info", "sem_seg_file_name", "annotations"):
            dataset_dict.pop(key, None)
        return dataset_dict, None
    return dataset_dict, np.rint(aug_input.sem_seg).astype(np.int64)


@DATASET_MAPPER_REGISTRY.register()
class COCOPanopticDatasetMapper:
    """
    Image + panoptic PNG -> ``image``, ``instances`` (non-crowd things: ``gt_boxes``,
    ``gt_classes``, ``gt_masks``) and ``sem_seg`` (stuff ids ``1..S``, every thing pixel 0,
    void 255), augmented together. At test time only the image is loaded.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: list,
        image_format: str,
        ignore_label: int = 255,
    ):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.ignore_label = ignore_label

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            "is_train": is_train,
            "augmentations": build_panoptic_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "ignore_label": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
        }

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        dataset_dict, segment_ids = map_panoptic_image(
            dataset_dict, self.augmentations, self.image_format, self.is_train
        )
        if segment_ids is None:
            return dataset_dict
        dataset_dict["instances"], dataset_dict["sem_seg"] = self._targets(
            segment_ids, dataset_dict.pop("segments_info"), segment_ids.shape
        )
        dataset_dict.pop("pan_seg_file_name")
        dataset_dict.pop("sem_seg_file_name", None)
        return dataset_dict

    def _targets(self, segment_ids: np.ndarray, segments_info: list[dict], image_shape):
        sem_seg = np.full(segment_ids.shape, self.ignore_label, dtype=np.int64)
        classes, masks = [], []
        for segment in segments_info:
            mask = segment_ids == segment["id"]
            if not segment["isthing"]:
                sem_seg[mask] = segment["category_id"]
                continue
            sem_seg[mask] = 0  # crowd regions are things too: Panoptic FPN's "things" class
            if segment.get("iscrowd", 0) or not mask.any():
                continue
            classes.append(segment["category_id"])
            masks.append(mask)
        instances = Instances(image_shape)
        instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
        if masks:
            bit_masks = BitMasks(torch.from_numpy(np.stack(masks)))
        else:
            bit_masks = BitMasks(torch.zeros((0, *image_shape), dtype=torch.bool))
        instances.gt_masks = bit_masks
        instances.gt_boxes = bit_masks.get_bounding_boxes()
        return instances, torch.from_numpy(sem_seg)


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
