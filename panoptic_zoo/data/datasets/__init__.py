from .builtin import register_all, register_cityscapes_panoptic_separated, register_shapes
from .panoptic import (
    AnnotationError,
    load_panoptic_json,
    register_panoptic_dataset,
    separated_metadata,
)

register_all()

__all__ = [
    "AnnotationError",
    "load_panoptic_json",
    "register_cityscapes_panoptic_separated",
    "register_panoptic_dataset",
    "register_shapes",
    "separated_metadata",
]
