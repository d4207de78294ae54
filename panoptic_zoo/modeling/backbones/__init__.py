"""
Mobile backbones with ImageNet weights available offline: MobileNetV2 and EfficientNet-Lite0,
plain (res2..res5) or with detectron2's FPN, registered in detectron2's ``BACKBONE_REGISTRY`` and
usable by every method by config (see docs/MODEL_ZOO.md).
"""

from .build import (
    add_mobile_backbone_config,
    build_efficientnet_lite0_backbone,
    build_efficientnet_lite0_fpn_backbone,
    build_mobilenet_v2_backbone,
    build_mobilenet_v2_fpn_backbone,
)
from .mobile import EfficientNetLite0Backbone, MobileNetV2Backbone
from .pretrained import (
    PRETRAINED_SOURCES,
    PretrainedWeightsError,
    pretrained_checkpoint,
)

__all__ = [
    "PRETRAINED_SOURCES",
    "EfficientNetLite0Backbone",
    "MobileNetV2Backbone",
    "PretrainedWeightsError",
    "add_mobile_backbone_config",
    "build_efficientnet_lite0_backbone",
    "build_efficientnet_lite0_fpn_backbone",
    "build_mobilenet_v2_backbone",
    "build_mobilenet_v2_fpn_backbone",
    "pretrained_checkpoint",
]
