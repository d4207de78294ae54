"""
``Mask2FormerLSJDatasetMapper``: :class:`COCOPanopticDatasetMapper` with Mask2Former's COCO
training augmentation, large-scale jitter (as the official ``coco_panoptic_lsj`` mapper): a
horizontal flip, a resize of the image to a random 0.1-2.0 times a square of IMAGE_SIZE
(keeping its aspect ratio), and a crop (or pad) to that square. Evaluation: the parent's resize.
"""

from __future__ import annotations

from detectron2.data import transforms as T

from ...data.mappers import DATASET_MAPPER_REGISTRY, COCOPanopticDatasetMapper

__all__ = ["Mask2FormerLSJDatasetMapper", "large_scale_jitter"]


def large_scale_jitter(cfg) -> list:
    """Flip (INPUT.RANDOM_FLIP), ResizeScale and FixedSizeCrop of MODEL.MASK2FORMER.LSJ."""
    lsj = cfg.MODEL.MASK2FORMER.LSJ
    augmentations = []
    if cfg.INPUT.RANDOM_FLIP != "none":
        augmentations.append(T.RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                                          vertical=cfg.INPUT.RANDOM_FLIP == "vertical"))  # fmt: skip
    # This detectron2's crop pads the panoptic ids with 0, void (later detectron2 versions pad
    # segmentations with 255, a valid segment id of a panoptic PNG).
    augmentations += [
        T.ResizeScale(lsj.MIN_SCALE, lsj.MAX_SCALE, lsj.IMAGE_SIZE, lsj.IMAGE_SIZE),
        T.FixedSizeCrop((lsj.IMAGE_SIZE, lsj.IMAGE_SIZE)),
    ]
    return augmentations


@DATASET_MAPPER_REGISTRY.register()
class Mask2FormerLSJDatasetMapper(COCOPanopticDatasetMapper):
    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        arguments = super().from_config(cfg, is_train)
        if is_train:
            arguments["augmentations"] = large_scale_jitter(cfg)
        return arguments
