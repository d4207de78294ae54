"""
Panoptic-DeepLab (Cheng et al., CVPR 2020): bottom-up panoptic segmentation from a semantic
branch and a class-agnostic instance branch (center heatmap + center offsets), grouped and
fused by majority vote. See docs/methods/panoptic_deeplab.md.

Importing registers ``PanopticDeepLabModel`` (META_ARCH_REGISTRY), its heads
(SEM_SEG_HEADS_REGISTRY, detectron2's INS_EMBED_BRANCHES_REGISTRY) and
``PanopticDeepLabDatasetMapper`` (DATASET_MAPPER_REGISTRY).
"""

from ..methods import PanopticMethod, register_method
from .config import add_panoptic_deeplab_config
from .heads import PanopticDeepLabInstanceHead, PanopticDeepLabSemanticHead
from .ids import UnifiedIds
from .postprocess import get_panoptic_segmentation
from .mapper import PanopticDeepLabDatasetMapper
from .meta_arch import PanopticDeepLabModel

__all__ = [
    "add_panoptic_deeplab_config",
    "get_panoptic_segmentation",
    "PanopticDeepLabDatasetMapper",
    "PanopticDeepLabInstanceHead",
    "PanopticDeepLabModel",
    "PanopticDeepLabSemanticHead",
    "UnifiedIds",
]

register_method(
    PanopticMethod(
        name="Panoptic-DeepLab",
        meta_architecture="PanopticDeepLabModel",
        shapes_config="shapes/panoptic_deeplab_R_18.yaml",
        coco_config="coco/panoptic_deeplab_R_52_DC5_dsconv_200k.yaml",
    )
)
