"""Panoptic post-processing shared by the methods: pure tensor code, run after the network."""

from .panoptic import (
    panoptic_segments,
    paste_instances_by_score,
    remove_overlapping_instances,
    resize_panoptic,
)

__all__ = [
    "panoptic_segments",
    "paste_instances_by_score",
    "remove_overlapping_instances",
    "resize_panoptic",
]
