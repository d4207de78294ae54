"""
Panoptic FCN (Li et al., "Fully Convolutional Networks for Panoptic Segmentation", CVPR 2021):
things and stuff both predicted as kernels convolved with one encoded feature map.

Importing registers ``PanopticFCN`` (META_ARCH_REGISTRY) and
``build_panoptic_fcn_resnet_fpn_backbone`` (BACKBONE_REGISTRY). See docs/methods/panoptic_fcn.md.
"""

from .config import add_panoptic_fcn_config
from .heads import FeatureEncoder, KernelGenerator, build_panoptic_fcn_resnet_fpn_backbone
from .inference import PanopticFCNInference, fuse_kernels
from .meta_arch import PanopticFCN
from .targets import PanopticFCNTargetGenerator

__all__ = [
    "FeatureEncoder",
    "KernelGenerator",
    "PanopticFCN",
    "PanopticFCNInference",
    "PanopticFCNTargetGenerator",
    "add_panoptic_fcn_config",
    "build_panoptic_fcn_resnet_fpn_backbone",
    "fuse_kernels",
]
