"""
Method-independent panoptic post-processing on tensors: removing overlapping instances,
turning per-pixel stuff classes and instance indices into a segment-id map with
``segments_info``, and voiding small stuff regions.
"""

from __future__ import annotations

import torch

__all__ = ["remove_overlapping_instances", "panoptic_segments"]


def remove_overlapping_instances(
    masks: torch.Tensor, scores: torch.Tensor, overlap_thresh: float
) -> torch.Tensor:
    """
    Indices (by decreasing score) of the instances to keep: an instance whose binary mask
    (N, H, W) lies by more than ``overlap_thresh`` of its area on masks already kept is
    dropped, as is an empty mask.
    """
    taken = torch.zeros(masks.shape[1:], dtype=torch.bool, device=masks.device)
    keep = []
    for index in torch.argsort(scores, descending=True).tolist():
        mask = masks[index]
        area = mask.sum()
        if area == 0 or (mask & taken).sum() > overlap_thresh * area:
            continue
        keep.append(index)
        taken |= mask
    return torch.tensor(keep, dtype=torch.int64, device=masks.device)


def panoptic_segments(
    stuff_classes: torch.Tensor,
    instance_index: torch.Tensor,
    instance_classes: torch.Tensor,
    instance_scores: torch.Tensor,
    stuff_area_limit: int,
) -> tuple[torch.Tensor, list[dict]]:
    """
    A panoptic segmentation in the output format of detectron2's meta-architectures.

    Args:
        stuff_classes: (H, W) stuff class per pixel (separated ids ``1..S``; 0 = none).
        instance_index: (H, W) index into the instance arrays per pixel (-1 = none); it takes
            precedence over ``stuff_classes``.
        instance_classes, instance_scores: (N,) thing class (``0..T-1``) and score.
        stuff_area_limit: stuff classes covering fewer pixels become void.

    Returns:
        (segment ids (H, W) int32, 0 = void; segments_info with id, category_id, isthing,
        area, and score for things), instances first in index order, then stuff by class.
    """
    segments = torch.zeros(stuff_classes.shape, dtype=torch.int32, device=stuff_classes.device)
    segments_info = []
    for index in range(len(instance_classes)):
        mask = instance_index == index
        area = int(mask.sum())
        if area == 0:
            continue
        segment_id = len(segments_info) + 1
        segments[mask] = segment_id
        segments_info.append(
            {
                "id": segment_id,
                "category_id": int(instance_classes[index]),
                "isthing": True,
                "score": float(instance_scores[index]),
                "area": area,
            }
        )
    stuff = torch.where(instance_index < 0, stuff_classes, torch.zeros_like(stuff_classes))
    for stuff_class in torch.unique(stuff).tolist():
        mask = stuff == stuff_class
        area = int(mask.sum())
        if stuff_class == 0 or area < stuff_area_limit:
            continue
        segment_id = len(segments_info) + 1
        segments[mask] = segment_id
        segments_info.append(
            {"id": segment_id, "category_id": stuff_class, "isthing": False, "area": area}
        )
    return segments, segments_info
