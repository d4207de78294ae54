"""
Panoptic FCN (Li et al., "Fully Convolutional Networks for Panoptic Segmentation", CVPR 2021):
things and stuff both predicted as kernels convolved with one encoded feature map.

Importing registers ``PanopticFCN`` (META_ARCH_REGISTRY) and
``build_panoptic_fcn_resnet_fpn_backbone`` (BACKBONE_REGISTRY). See docs/methods/panoptic_fcn.md.
"""

from ..methods import PanopticMethod, register_method
from .backbone import build_panoptic_fcn_resnet_fpn_backbone
from .config import add_panoptic_fcn_config
from .heads import FeatureEncoder, KernelGenerator
from .meta_arch import PanopticFCN
from .postprocess import PanopticFCNPostprocessor, fuse_kernels
from .targets import PanopticFCNTargetGenerator

__all__ = [
    "FeatureEncoder",
    "KernelGenerator",
    "PanopticFCN",
    "PanopticFCNPostprocessor",
    "PanopticFCNTargetGenerator",
    "add_panoptic_fcn_config",
    "build_panoptic_fcn_resnet_fpn_backbone",
    "fuse_kernels",
]

register_method(
    PanopticMethod(
        name="Panoptic FCN",
        meta_architecture="PanopticFCN",
        shapes_config="shapes/panoptic_fcn_R_18.yaml",
        coco_config="coco/panoptic_fcn_R_50_1x.yaml",
    )
)
