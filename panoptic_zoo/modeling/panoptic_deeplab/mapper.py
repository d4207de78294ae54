"""
``PanopticDeepLabDatasetMapper``: image + panoptic PNG -> Panoptic-DeepLab's training targets.

The targets come from detectron2's ``PanopticDeepLabTargetGenerator`` (it matches the paper and
the official code); what this mapper adds is the project's data contract: the checked panoptic
PNG reader, augmentation of the segment ids through float64 (exact for 24-bit ids), and the
conversion of the dataset's separated category ids to the single semantic space the model
predicts (:mod:`.ids`).
"""

from __future__ import annotations

from typing import Any

from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.projects.panoptic_deeplab.target_generator import PanopticDeepLabTargetGenerator

from ...data.datasets.panoptic import AnnotationError
from ...data.mappers import (
    DATASET_MAPPER_REGISTRY,
    build_panoptic_augmentations,
    map_panoptic_image,
)
from .ids import UnifiedIds

__all__ = ["PanopticDeepLabDatasetMapper"]


@DATASET_MAPPER_REGISTRY.register()
class PanopticDeepLabDatasetMapper:
    """
    Training: ``image``, ``sem_seg`` (unified classes, void = ignore value), ``sem_seg_weights``
    (small instances weighted), ``center`` heatmap, ``center_weights``, ``offset`` (dy, dx)
    and ``offset_weights``, all augmented together. Evaluation: only the image.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: list,
        image_format: str,
        ids: UnifiedIds,
        target_generator: PanopticDeepLabTargetGenerator,
    ):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.ids = ids
        self.target_generator = target_generator

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ids = UnifiedIds.from_config(cfg)
        targets = cfg.MODEL.PANOPTIC_DEEPLAB.TARGETS
        ignore_value = cfg.MODEL.PANOPTIC_DEEPLAB.SEM_SEG_HEAD.IGNORE_VALUE
        # The target generator stores semantic labels as uint8.
        if not (ids.num_classes <= ignore_value <= 255):
            raise ValueError(
                f"MODEL.PANOPTIC_DEEPLAB.SEM_SEG_HEAD.IGNORE_VALUE must be in "
                f"[{ids.num_classes}, 255] (a label that is no class), got {ignore_value}"
            )
        target_generator = PanopticDeepLabTargetGenerator(
            ignore_label=ignore_value,
            thing_ids=ids.thing_ids,
            sigma=targets.GAUSSIAN_SIGMA,
            ignore_stuff_in_offset=targets.IGNORE_STUFF_IN_OFFSET,
            small_instance_area=targets.SMALL_INSTANCE_AREA,
            small_instance_weight=targets.SMALL_INSTANCE_WEIGHT,
            ignore_crowd_in_semantic=targets.IGNORE_CROWD_IN_SEMANTIC,
        )
        return {
            "is_train": is_train,
            "augmentations": build_panoptic_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "ids": ids,
            "target_generator": target_generator,
        }

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        dataset_dict, segment_ids = map_panoptic_image(
            dataset_dict, self.augmentations, self.image_format, self.is_train
        )
        if segment_ids is None:
            return dataset_dict
        segments = [self._unified(s, dataset_dict) for s in dataset_dict.pop("segments_info")]
        targets = self.target_generator(segment_ids, segments)
        del targets["center_points"]  # a list: not batchable, and the model does not use it
        dataset_dict.update(targets)
        dataset_dict.pop("pan_seg_file_name")
        dataset_dict.pop("sem_seg_file_name", None)
        return dataset_dict

    def _unified(self, segment: dict[str, Any], dataset_dict: dict[str, Any]) -> dict[str, Any]:
        """The segment with its separated ``category_id`` replaced by the unified class."""
        try:
            category = self.ids.to_unified(segment["category_id"], segment["isthing"])
        except ValueError as e:
            raise AnnotationError(
                f"{dataset_dict['pan_seg_file_name']}: segment {segment['id']}: {e}"
            ) from e
        return {"id": segment["id"], "category_id": category, "iscrowd": segment.get("iscrowd", 0)}
