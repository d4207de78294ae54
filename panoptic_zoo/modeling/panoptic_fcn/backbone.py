"""Panoptic FCN's backbone: ResNet-FPN giving P2-P7 (registered in BACKBONE_REGISTRY)."""

from __future__ import annotations

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelP6P7
from detectron2.modeling.backbone.resnet import build_resnet_backbone

__all__ = ["build_panoptic_fcn_resnet_fpn_backbone"]


@BACKBONE_REGISTRY.register()
def build_panoptic_fcn_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet-FPN with P2-P5 from the FPN and P6-P7 from P5 (the feature encoder needs P2,
    the kernel generator P3-P7; detectron2's RetinaNet builder stops at P3)."""
    bottom_up = build_resnet_backbone(cfg, input_shape)
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(out_channels, out_channels, in_feature="p5"),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
