"""
UPSNet (Xiong et al., "UPSNet: A Unified Panoptic Segmentation Network", CVPR 2019): the
``UPSNet`` meta-architecture, its ``UPSNetDatasetMapper`` and ``add_upsnet_config``.
See docs/methods/upsnet.md.
"""

from ..methods import PanopticMethod, register_method
from .config import add_upsnet_config
from .mapper import UPSNetDatasetMapper
from .meta_arch import UPSNet

__all__ = ["UPSNet", "UPSNetDatasetMapper", "add_upsnet_config"]

register_method(
    PanopticMethod(
        name="UPSNet",
        meta_architecture="UPSNet",
        shapes_config="shapes/upsnet_R_18.yaml",
        coco_config="coco/upsnet_R_50_1x.yaml",
    )
)
