"""Panoptic post-processing shared by the methods: pure tensor code, run after the network."""

from .maps import crop_and_resize
from .panoptic import (
    panoptic_segments,
    paste_instances_by_score,
    remove_overlapping_instances,
    resize_panoptic,
)

__all__ = [
    "crop_and_resize",
    "panoptic_segments",
    "paste_instances_by_score",
    "remove_overlapping_instances",
    "resize_panoptic",
]
