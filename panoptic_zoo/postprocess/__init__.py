"""Panoptic post-processing shared by the methods: pure tensor code, run after the network."""

from .maps import (
    CLASS_PASS_PIXELS,
    class_argmax,
    class_logsumexps,
    crop_and_resize,
    masks_above,
    merged_class_probabilities,
)
from .outputs import check_panoptic_output, panoptic_output
from .panoptic import (
    panoptic_segments,
    paste_instances_by_score,
    remove_overlapping_instances,
    resize_panoptic,
)

__all__ = [
    "CLASS_PASS_PIXELS",
    "check_panoptic_output",
    "class_argmax",
    "class_logsumexps",
    "crop_and_resize",
    "masks_above",
    "merged_class_probabilities",
    "panoptic_output",
    "panoptic_segments",
    "paste_instances_by_score",
    "remove_overlapping_instances",
    "resize_panoptic",
]
