"""
Converters from official release checkpoints to this project's (key mapping in each module):
detectron2's Panoptic FPN and Panoptic-DeepLab (:mod:`.detectron2`), the official Panoptic
FCN (:mod:`.panoptic_fcn`), UPSNet (:mod:`.upsnet`) and Mask2Former (:mod:`.mask2former`). CLI: ``tools/convert_checkpoint.py``.
"""

from .common import (
    Conversion,
    ConversionError,
    load_release_file,
    save_converted,
    verify_against_model,
)
from .detectron2 import (
    convert_detectron2_panoptic_deeplab,
    convert_detectron2_panoptic_fpn,
    unified_class_order,
)
from .mask2former import convert_official_mask2former, mask2former_input_notes
from .panoptic_fcn import convert_official_panoptic_fcn, official_input_notes
from .upsnet import convert_official_upsnet

__all__ = [
    "Conversion",
    "ConversionError",
    "convert_detectron2_panoptic_deeplab",
    "convert_detectron2_panoptic_fpn",
    "convert_official_mask2former",
    "convert_official_panoptic_fcn",
    "convert_official_upsnet",
    "load_release_file",
    "mask2former_input_notes",
    "official_input_notes",
    "save_converted",
    "unified_class_order",
    "verify_against_model",
]
