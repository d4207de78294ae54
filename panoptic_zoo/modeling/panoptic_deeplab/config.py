"""
``add_panoptic_deeplab_config``: Panoptic-DeepLab's options, under ``MODEL.PANOPTIC_DEEPLAB``.

Only keys that are missing are added, so calling it twice (or after another method's
``add_*_config``) changes nothing. Defaults are neutral: nothing here touches the solver, the
input pipeline or a key another method reads; the paper's settings live in the YAML files.
The only keys outside ``MODEL.PANOPTIC_DEEPLAB`` are the three that detectron2's DeepLab ResNet
builder (``build_resnet_deeplab_backbone``) reads from ``MODEL.RESNETS``; their defaults give a
plain ResNet (no extra dilation, no multi-grid, the standard stem).
"""

from __future__ import annotations

from detectron2.config import CfgNode as CN

from ...utils.config import add_missing_options

__all__ = ["add_panoptic_deeplab_config"]


def _decoder_defaults(name: str, head_channels: int) -> dict:
    """The options of one DeepLabV3+-style branch (ASPP + decoder + head)."""
    return {
        "NAME": name,
        "IN_FEATURES": ["res2", "res3", "res5"],
        # Low-level features projected before fusion; one less than IN_FEATURES (the last
        # feature goes through ASPP).
        "PROJECT_CHANNELS": [32, 64],
        "ASPP_CHANNELS": 256,
        "ASPP_DILATIONS": [6, 12, 18],
        "ASPP_DROPOUT": 0.1,
        "CONVS_DIM": 256,
        # Channels of the extra convolution between decoder and predictor.
        "HEAD_CHANNELS": head_channels,
        "COMMON_STRIDE": 4,
        # "SyncBN" falls back to "BN" in single-process and CPU runs (see meta_arch.py).
        "NORM": "BN",
    }


def add_panoptic_deeplab_config(cfg: CN) -> None:
    """Add Panoptic-DeepLab's options to ``cfg`` (only those that are missing)."""
    semantic = _decoder_defaults("PanopticDeepLabSemanticHead", head_channels=256)
    semantic.update(
        {
            # "hard_pixel_mining" (bootstrapped cross entropy over the LOSS_TOP_K hardest
            # pixels) or "cross_entropy".
            "LOSS_TYPE": "cross_entropy",
            "LOSS_TOP_K": 1.0,
            "LOSS_WEIGHT": 1.0,
            "IGNORE_VALUE": 255,
        }
    )
    instance = _decoder_defaults("PanopticDeepLabInstanceHead", head_channels=32)
    instance.update({"CONVS_DIM": 128, "CENTER_LOSS_WEIGHT": 200.0, "OFFSET_LOSS_WEIGHT": 0.01})
    add_missing_options(
        cfg.MODEL,
        {
            "RESNETS": {"RES4_DILATION": 1, "RES5_MULTI_GRID": [1, 1, 1], "STEM_TYPE": "basic"},
            "PANOPTIC_DEEPLAB": {
                # Category counts in the dataset's separated ids: things 0..T-1, stuff 1..S.
                # The semantic head predicts T + S classes (docs/methods/panoptic_deeplab.md).
                # -1 = not set: building the model or the mapper then raises a clear error.
                "NUM_THING_CLASSES": -1,
                "NUM_STUFF_CLASSES": -1,
                # Depthwise-separable 5x5 convs in ASPP, decoders and heads (the paper's).
                "USE_DEPTHWISE_SEPARABLE_CONV": False,
                "SEM_SEG_HEAD": semantic,
                "INS_EMBED_HEAD": instance,
                # Training targets.
                "TARGETS": {
                    "GAUSSIAN_SIGMA": 8.0,
                    "IGNORE_STUFF_IN_OFFSET": True,
                    # Thing segments smaller than this (pixels) get SMALL_INSTANCE_WEIGHT in the
                    # semantic loss; 0 disables the reweighting.
                    "SMALL_INSTANCE_AREA": 0,
                    "SMALL_INSTANCE_WEIGHT": 1.0,
                    "IGNORE_CROWD_IN_SEMANTIC": False,
                },
                # Post-processing.
                "STUFF_AREA": 2048,
                "CENTER_THRESHOLD": 0.1,
                "NMS_KERNEL": 7,
                "TOP_K_INSTANCE": 200,
                # Internal panoptic label = unified class * LABEL_DIVISOR + instance number; must
                # exceed TOP_K_INSTANCE. Outputs use segment ids, not these labels.
                "LABEL_DIVISOR": 1000,
                # Pad every batch to a multiple of this (e.g. a fixed 640x640 on COCO);
                # <= 0: the backbone's size divisibility.
                "SIZE_DIVISIBILITY": -1,
            },
        },
    )
