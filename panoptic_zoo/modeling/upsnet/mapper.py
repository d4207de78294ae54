"""UPSNet's training targets from a COCO-panoptic-format dataset."""

from __future__ import annotations

import numpy as np
import torch
from detectron2.config import configurable

from ...data.mappers import DATASET_MAPPER_REGISTRY, COCOPanopticDatasetMapper

__all__ = ["UPSNetDatasetMapper"]


@DATASET_MAPPER_REGISTRY.register()
class UPSNetDatasetMapper(COCOPanopticDatasetMapper):
    """
    :class:`COCOPanopticDatasetMapper`'s ``image`` and ``instances``, with a ``sem_seg`` target
    over every category, in the channel order of UPSNet's semantic head: stuff ``1..S`` ->
    ``0..S-1``, things ``0..T-1`` -> ``S..S+T-1`` (crowd regions included: their pixels are
    that class), void -> ignore.
    """

    @configurable
    def __init__(self, is_train: bool, *, num_stuff_classes: int, **kwargs):
        super().__init__(is_train, **kwargs)
        self.num_stuff_classes = num_stuff_classes

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            **super().from_config(cfg, is_train),
            "num_stuff_classes": cfg.MODEL.UPSNET.NUM_STUFF_CLASSES,
        }

    def _targets(self, segment_ids: np.ndarray, segments_info: list[dict], image_shape):
        instances, merged = super()._targets(segment_ids, segments_info, image_shape)
        # Stuff keeps its order, shifted past the merged "things" class 0 that UPSNet lacks;
        # thing pixels (0 in ``merged``) are all rewritten below.
        semantic = torch.where(merged == self.ignore_label, merged, merged - 1)
        for segment in segments_info:
            if segment["isthing"]:
                mask = torch.from_numpy(segment_ids == segment["id"])
                semantic[mask] = self.num_stuff_classes + segment["category_id"]
        return instances, semantic
