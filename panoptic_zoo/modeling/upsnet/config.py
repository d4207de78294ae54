"""``MODEL.UPSNET`` options: UPSNet's semantic head, RoI loss, panoptic head and inference."""

from __future__ import annotations

from detectron2.config import CfgNode as CN

from ...utils.config import add_missing_options

__all__ = ["add_upsnet_config"]


def _upsnet_defaults() -> CN:
    """UPSNet defaults; COCO and Cityscapes values of the paper are set in their YAML files."""
    upsnet = CN()
    # Number of stuff classes S (the separated ids 1..S; the merged "things" class 0 is not one
    # of them). Thing classes come from MODEL.ROI_HEADS.NUM_CLASSES.
    upsnet.NUM_STUFF_CLASSES = 0
    # A fully connected projection of the globally averaged top backbone feature added to the
    # FPN's top lateral (official "fpn_with_gap": on for COCO, off for Cityscapes).
    upsnet.FPN_GLOBAL_POOLING = False

    upsnet.SEMANTIC_HEAD = CN()
    upsnet.SEMANTIC_HEAD.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    # Output channels of each layer of the deformable-conv subnetwork shared by all levels, on
    # 256-channel FPN features: official COCO (and the paper) 256-128-128, official Cityscapes
    # 128-128 (fcn_num_layers 2).
    upsnet.SEMANTIC_HEAD.CONV_DIMS = [256, 128, 128]
    # False replaces the deformable convolutions by plain 3x3 convolutions (ablation only).
    upsnet.SEMANTIC_HEAD.DEFORMABLE = True
    upsnet.SEMANTIC_HEAD.NORM = ""
    upsnet.SEMANTIC_HEAD.COMMON_STRIDE = 4
    upsnet.SEMANTIC_HEAD.LOSS_WEIGHT = 1.0
    # Absolute weight of the RoI loss (official COCO: 0.2 x LOSS_WEIGHT); 0 disables it.
    upsnet.SEMANTIC_HEAD.ROI_LOSS_WEIGHT = 0.0
    upsnet.SEMANTIC_HEAD.ROI_RESOLUTION = 28

    upsnet.PANOPTIC_HEAD = CN()
    upsnet.PANOPTIC_HEAD.LOSS_WEIGHT = 1.0
    # Fraction of ground-truth instances given to the panoptic head in training; the pixels of
    # the others target the unknown class. 1.0 disables the unknown class (train and test).
    upsnet.PANOPTIC_HEAD.BOX_KEEP_FRACTION = 0.7

    upsnet.INFERENCE = CN()
    # Panoptic candidates: every (proposal, thing class) box scoring above SCORE_THRESH, one
    # class-agnostic NMS at NMS_THRESH, the TEST.DETECTIONS_PER_IMAGE best (official: 0.6, 0.5,
    # 100).
    upsnet.INFERENCE.SCORE_THRESH = 0.6
    upsnet.INFERENCE.NMS_THRESH = 0.5
    # An instance is dropped when this fraction of its mask is already taken by higher-scored
    # instances of its class (official: 0.3).
    upsnet.INFERENCE.OVERLAP_THRESH = 0.3
    # Stuff segments smaller than this (pixels at the original image size) become void.
    upsnet.INFERENCE.STUFF_AREA_LIMIT = 4096
    return upsnet


def add_upsnet_config(cfg: CN) -> None:
    """Add the missing ``MODEL.UPSNET`` keys; existing values (and all other keys) stay."""
    add_missing_options(cfg.MODEL, {"UPSNET": _upsnet_defaults()})
