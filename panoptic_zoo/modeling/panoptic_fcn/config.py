"""``MODEL.PANOPTIC_FCN`` options: kernel generator, feature encoder, targets, losses, inference."""

from __future__ import annotations

import math

from detectron2.config import CfgNode as CN

from ...utils.config import add_missing_options

__all__ = ["add_panoptic_fcn_config"]


def _panoptic_fcn_defaults() -> CN:
    """Defaults of the official COCO setting; dataset-specific values live in the YAML files."""
    fcn = CN()
    # Thing classes are the separated ids 0..NUM_THING_CLASSES-1; stuff classes 1..NUM_STUFF_CLASSES
    # plus class 0 ("any thing"), which the stuff branch predicts too (official WITH_THING).
    fcn.NUM_THING_CLASSES = 80
    fcn.NUM_STUFF_CLASSES = 53

    fcn.KERNEL_GENERATOR = CN()
    # FPN levels the position and kernel heads run on (shared weights across levels).
    fcn.KERNEL_GENERATOR.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # (min, max) sqrt(box area), in input pixels, of the things each level learns; the ranges
    # overlap, so a thing near a boundary is learned by two levels.
    fcn.KERNEL_GENERATOR.INSTANCE_SCALES = [[1, 64], [32, 128], [64, 256], [128, 512], [256, 2048]]

    fcn.POSITION_HEAD = CN()
    fcn.POSITION_HEAD.NUM_CONVS = 3
    fcn.POSITION_HEAD.CONVS_DIM = 256
    fcn.POSITION_HEAD.NORM = "GN"
    fcn.POSITION_HEAD.DEFORM = True
    # Initial foreground probability of the heatmaps: 0.1007, the official output bias -2.19
    # (-log(0.9 / 0.1) = -2.197 rounded).
    fcn.POSITION_HEAD.PRIOR_PROB = 1 / (1 + math.exp(2.19))

    fcn.KERNEL_HEAD = CN()
    fcn.KERNEL_HEAD.NUM_CONVS = 3
    fcn.KERNEL_HEAD.CONVS_DIM = 256
    fcn.KERNEL_HEAD.NORM = "GN"

    fcn.FEATURE_ENCODER = CN()
    fcn.FEATURE_ENCODER.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    # Channels of the semantic-FPN branches that bring every level to stride 4.
    fcn.FEATURE_ENCODER.FPN_DIM = 256
    # Norm of those branches (official SEMANTIC_FPN.NORM) and of the convolutions after the
    # coordinates (official FEATURE_ENCODER.NORM: none).
    fcn.FEATURE_ENCODER.FPN_NORM = "GN"
    fcn.FEATURE_ENCODER.NORM = ""
    # Convolutions after the coordinate channels; CONVS_DIM (C_e) is also the kernel size.
    # The enhanced variant (PanopticFCN*) uses 256 channels and deformable convolutions.
    fcn.FEATURE_ENCODER.NUM_CONVS = 3
    fcn.FEATURE_ENCODER.CONVS_DIM = 64
    fcn.FEATURE_ENCODER.DEFORM = False

    fcn.TARGETS = CN()
    # CornerNet's Gaussian radius of a thing's box at its level: the box may move until its IoU
    # with the ground truth drops to this value; sigma = diameter / 3 (official).
    fcn.TARGETS.GAUSSIAN_MIN_OVERLAP = 0.7

    fcn.LOSS = CN()
    fcn.LOSS.POSITION_WEIGHT = 1.0
    fcn.LOSS.SEGMENT_WEIGHT = 3.0
    fcn.LOSS.FOCAL_ALPHA = 0.25
    fcn.LOSS.FOCAL_GAMMA = 2.0
    # k of the weighted dice loss: kernels at the k highest-scored cells inside each thing's
    # mask (at most the level's size).
    fcn.LOSS.TOP_K_POINTS = 7

    fcn.INFERENCE = CN()
    # A thing candidate's smoothed peak, a stuff class's mean probability over its region: kept
    # when above these (official POSITION_HEAD.THING.THRES / STUFF.THRES; its FAST configs use
    # 0.2 / 0.1).
    fcn.INFERENCE.THING_SCORE_THRESH = 0.05
    fcn.INFERENCE.STUFF_SCORE_THRESH = 0.05
    fcn.INFERENCE.THING_TOP_K = 50  # peaks per level (official: half of TOP_NUM = 100)
    # Heatmaps are averaged with their k x k mean before peak NMS; one k per kernel-generator level.
    fcn.INFERENCE.HEATMAP_POOL_SIZES = [3, 3, 3, 5, 5]
    fcn.INFERENCE.KERNEL_FUSION_THRESH = 0.9  # cosine similarity, same class only
    fcn.INFERENCE.MASK_THRESH = 0.4
    # Things whose score times their mean mask probability is below this are dropped.
    fcn.INFERENCE.MIN_SCORE = 0.05
    fcn.INFERENCE.INSTANCE_SCORE_THRESH = 0.2  # things kept in the panoptic merge
    fcn.INFERENCE.OVERLAP_THRESH = 0.5
    # Stuff segments smaller than this (pixels of the output resolution) become void.
    fcn.INFERENCE.STUFF_AREA_LIMIT = 4096
    return fcn


def add_panoptic_fcn_config(cfg: CN) -> None:
    """Add the missing ``MODEL.PANOPTIC_FCN`` keys; existing values (and all other keys) stay."""
    add_missing_options(cfg.MODEL, {"PANOPTIC_FCN": _panoptic_fcn_defaults()})
