"""
Method-independent panoptic post-processing on tensors: resolving overlapping instances,
turning per-pixel stuff classes and instance indices into a segment-id map with
``segments_info`` (small stuff regions voided), and resizing the result.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "panoptic_segments",
    "paste_instances_by_score",
    "remove_overlapping_instances",
    "resize_panoptic",
]


def remove_overlapping_instances(
    masks: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, overlap_thresh: float
) -> torch.Tensor:
    """
    Indices (by decreasing score) of the instances to keep. An instance whose binary mask
    (N, H, W) lies by more than ``overlap_thresh`` of its area on kept masks *of its own class*
    is dropped (UPSNet's rule: instances of different classes may overlap, the panoptic head's
    argmax settles them), as is an empty mask.
    """
    taken = torch.zeros((int(classes.max()) + 1 if len(classes) else 0, *masks.shape[1:]),
                        dtype=torch.bool, device=masks.device)  # fmt: skip
    keep = []
    for index in torch.argsort(scores, descending=True).tolist():
        mask, taken_by_class = masks[index], taken[classes[index]]
        area = mask.sum()
        if area == 0 or (mask & taken_by_class).sum() > overlap_thresh * area:
            continue
        keep.append(index)
        taken_by_class |= mask
    return torch.tensor(keep, dtype=torch.int64, device=masks.device)


def paste_instances_by_score(
    masks: torch.Tensor, scores: torch.Tensor, score_thresh: float, overlap_thresh: float
) -> torch.Tensor:
    """
    Instance index per pixel (H, W; -1 = none), pasting binary masks (N, H, W) in decreasing
    score order onto the pixels still free, as detectron2's Panoptic FPN combine step does:
    masks scored below ``score_thresh``, empty, or lying by more than ``overlap_thresh`` of
    their area on earlier instances are skipped.
    """
    index_map = torch.full(masks.shape[1:], -1, dtype=torch.int64, device=masks.device)
    for index in torch.argsort(scores, descending=True).tolist():
        if scores[index] < score_thresh:
            break
        mask = masks[index]
        area = mask.sum()
        taken = index_map >= 0
        if area == 0 or (mask & taken).sum() > overlap_thresh * area:
            continue
        index_map[mask & ~taken] = index
    return index_map


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
    device = stuff_classes.device
    # Segment ids through lookup tables (one pass over the pixels), not one mask per segment.
    areas = torch.bincount(instance_index.flatten() + 1, minlength=len(instance_classes) + 1)
    present = torch.nonzero(areas[1:]).flatten()
    instance_ids = torch.zeros(len(instance_classes) + 1, dtype=torch.int32, device=device)
    instance_ids[present + 1] = torch.arange(1, len(present) + 1, dtype=torch.int32, device=device)
    segments_info = [
        {"id": segment_id, "category_id": int(instance_classes[index]), "isthing": True,
         "score": float(instance_scores[index]), "area": int(areas[index + 1])}
        for segment_id, index in enumerate(present.tolist(), start=1)
    ]  # fmt: skip

    stuff = torch.where(instance_index < 0, stuff_classes, torch.zeros_like(stuff_classes))
    labels, counts = torch.unique(stuff, return_counts=True)
    kept = (labels != 0) & (counts >= stuff_area_limit)
    num_stuff_ids = int(labels[-1]) + 1 if len(labels) else 1
    stuff_ids = torch.zeros(num_stuff_ids, dtype=torch.int32, device=device)
    first_stuff_id = len(segments_info) + 1
    stuff_ids[labels[kept]] = torch.arange(
        first_stuff_id, first_stuff_id + int(kept.sum()), dtype=torch.int32, device=device
    )
    segments_info += [
        {"id": segment_id, "category_id": stuff_class, "isthing": False, "area": area}
        for segment_id, (stuff_class, area) in enumerate(
            zip(labels[kept].tolist(), counts[kept].tolist()), start=first_stuff_id
        )
    ]
    segments = torch.where(instance_index < 0, stuff_ids[stuff], instance_ids[instance_index + 1])
    return segments, segments_info


def resize_panoptic(segments: torch.Tensor, segments_info: list[dict], height: int, width: int):
    """Segment ids resized (nearest) to the output size; areas recounted, vanished ones dropped."""
    if segments.shape == (height, width):
        return segments, segments_info
    resized = F.interpolate(segments[None, None].float(), size=(height, width), mode="nearest")
    resized = resized[0, 0].to(segments.dtype)
    areas = torch.bincount(resized.flatten().long(), minlength=len(segments_info) + 1)
    kept = [
        {**info, "area": int(areas[info["id"]])} for info in segments_info if areas[info["id"]] > 0
    ]
    return resized, kept
