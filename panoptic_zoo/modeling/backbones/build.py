"""
``MODEL.MOBILE_BACKBONE`` options and the registered builders (detectron2's BACKBONE_REGISTRY):

| builder | outputs | for |
| --- | --- | --- |
| ``build_mobilenet_v2_backbone``, ``build_efficientnet_lite0_backbone`` | ``OUT_FEATURES`` of stem, res2..res5 | Panoptic-DeepLab |
| ``build_mobilenet_v2_fpn_backbone``, ``build_efficientnet_lite0_fpn_backbone`` | p2..p6 (``FPN_TOP_BLOCK: LastLevelMaxPool``) or p2..p7 (``LastLevelP6P7``) | Panoptic FPN, UPSNet / Panoptic FCN |
"""

from __future__ import annotations

from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7

from ...utils.config import add_missing_options
from .mobile import EfficientNetLite0Backbone, MobileNetV2Backbone, StagedBackbone

__all__ = [
    "add_mobile_backbone_config",
    "build_efficientnet_lite0_backbone",
    "build_efficientnet_lite0_fpn_backbone",
    "build_mobilenet_v2_backbone",
    "build_mobilenet_v2_fpn_backbone",
]

TOP_BLOCKS = ("LastLevelMaxPool", "LastLevelP6P7")


def add_mobile_backbone_config(cfg: CfgNode) -> None:
    """Add the missing ``MODEL.MOBILE_BACKBONE`` keys (shared by MobileNetV2 and EfficientNet-Lite0)."""
    add_missing_options(
        cfg.MODEL,
        {
            "MOBILE_BACKBONE": {
                # "FrozenBN" keeps pretrained statistics; "GN" (groups = gcd(32, channels)) or
                # "BN"/"SyncBN" train from scratch. Freezing: MODEL.BACKBONE.FREEZE_AT.
                "NORM": "FrozenBN",
                "OUT_FEATURES": ["res2", "res3", "res4", "res5"],
                # FPN builders only: LastLevelMaxPool gives P6 by max-pooling P5 (Panoptic FPN,
                # UPSNet); LastLevelP6P7 gives P6 and P7 by strided convs from P5 (Panoptic FCN).
                "FPN_TOP_BLOCK": "LastLevelMaxPool",
            }
        },
    )


def _checked_input(input_shape: ShapeSpec) -> None:
    if input_shape.channels != 3:
        raise ValueError(f"mobile backbones take 3-channel images, got {input_shape.channels}")


def _bottom_up(cls: type[StagedBackbone], cfg, input_shape: ShapeSpec) -> StagedBackbone:
    _checked_input(input_shape)
    node = cfg.MODEL.MOBILE_BACKBONE
    backbone = cls(list(node.OUT_FEATURES), norm=node.NORM)
    return backbone.freeze(cfg.MODEL.BACKBONE.FREEZE_AT)


def _with_fpn(cfg, bottom_up: StagedBackbone) -> FPN:
    top_name = cfg.MODEL.MOBILE_BACKBONE.FPN_TOP_BLOCK
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    if top_name == "LastLevelMaxPool":
        top_block = LastLevelMaxPool()
    elif top_name == "LastLevelP6P7":
        top_block = LastLevelP6P7(out_channels, out_channels, in_feature="p5")
    else:
        raise ValueError(
            f"MODEL.MOBILE_BACKBONE.FPN_TOP_BLOCK must be one of {TOP_BLOCKS}, got {top_name!r}"
        )
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_mobilenet_v2_backbone(cfg, input_shape: ShapeSpec):
    return _bottom_up(MobileNetV2Backbone, cfg, input_shape)


@BACKBONE_REGISTRY.register()
def build_mobilenet_v2_fpn_backbone(cfg, input_shape: ShapeSpec):
    return _with_fpn(cfg, _bottom_up(MobileNetV2Backbone, cfg, input_shape))


@BACKBONE_REGISTRY.register()
def build_efficientnet_lite0_backbone(cfg, input_shape: ShapeSpec):
    return _bottom_up(EfficientNetLite0Backbone, cfg, input_shape)


@BACKBONE_REGISTRY.register()
def build_efficientnet_lite0_fpn_backbone(cfg, input_shape: ShapeSpec):
    return _with_fpn(cfg, _bottom_up(EfficientNetLite0Backbone, cfg, input_shape))
