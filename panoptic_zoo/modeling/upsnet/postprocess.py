"""
UPSNet's official post-processing of one image: overlap removal among the panoptic candidates,
the argmax of the panoptic logits Z, resizing to the output size, the semantic majority rule and
the stuff area limit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances

from ...postprocess import class_argmax, panoptic_segments, remove_overlapping_instances
from ...utils.chunks import row_chunks
from .panoptic_head import panoptic_logits, paste_mask_logits, pixel_boxes

__all__ = ["panoptic_postprocess", "reassign_by_semantic_majority"]


# Floats of Z per row chunk of the post-processing (16 MiB).
Z_CHUNK_FLOATS = 4 * 2**20


def panoptic_postprocess(
    semantic_logits: torch.Tensor,
    num_stuff_classes: int,
    candidates: Instances,
    mask_logits: torch.Tensor,
    overlap_thresh: float,
    with_unknown: bool,
    stuff_area_limit: int,
    output_size: tuple[int, int],
) -> tuple[torch.Tensor, list[dict]]:
    """
    UPSNet's official panoptic result of one image from its semantic logits (C, H, W) at the
    network's input resolution, its panoptic candidates (``pred_boxes``, ``scores``,
    ``pred_classes``, by decreasing score) and their mask logits (N, M, M): overlap removal,
    the argmax of Z at input resolution, then, with the semantic argmax, resized (nearest) to
    ``output_size``, where the semantic majority rule and the stuff area limit apply.
    """
    height, width = semantic_logits.shape[-2:]
    boxes = candidates.pred_boxes.tensor
    # Officially, with no candidate one all-zero channel (no box) stays, and with every
    # candidate's mask empty the first stays with zero mask logits; both can win pixels.
    placeholder = len(candidates) == 0
    if placeholder:
        semantic_boxes = boxes.new_zeros((1, 4))
        candidates = Instances(
            candidates.image_size, pred_boxes=Boxes(semantic_boxes), scores=boxes.new_ones(1),
            pred_classes=torch.zeros(1, dtype=torch.long, device=boxes.device),
        )  # fmt: skip
        pasted = boxes.new_zeros((1, height, width))
    else:
        mask_boxes, semantic_boxes = pixel_boxes(boxes, 1.0)
        pasted = paste_mask_logits(mask_logits, mask_boxes, height, width)
        keep = remove_overlapping_instances(
            pasted > 0, candidates.scores, candidates.pred_classes, overlap_thresh
        )
        if len(keep) == 0:
            keep, pasted = keep.new_zeros(1), torch.zeros_like(pasted)
        semantic_boxes, pasted, candidates = semantic_boxes[keep], pasted[keep], candidates[keep]
    classes = candidates.pred_classes
    # The winning channel of Z, in row chunks of ~Z_CHUNK_FLOATS: Z (S + N + 1 channels at
    # full resolution) is never whole.
    winner = torch.empty((height, width), dtype=torch.long, device=pasted.device)
    channels = num_stuff_classes + len(candidates) + 1
    for rows in row_chunks(height, channels * width, Z_CHUNK_FLOATS):
        z = panoptic_logits(
            semantic_logits[:, rows], num_stuff_classes, semantic_boxes, classes, pasted[:, rows],
            with_unknown, first_row=rows.start,
        )  # fmt: skip
        winner[rows] = class_argmax(z)
    semantic = class_argmax(semantic_logits)
    if (height, width) != tuple(output_size):
        winner, semantic = (_resize_labels(x, output_size) for x in (winner, semantic))
    num_instances = len(candidates)
    # Separated stuff ids 1..S; unknown (channel S + N) and instances are 0 (no stuff).
    stuff_classes = torch.where(winner < num_stuff_classes, winner + 1, torch.zeros_like(winner))
    is_instance = (winner >= num_stuff_classes) & (winner < num_stuff_classes + num_instances)
    instance_index = torch.where(
        is_instance, winner - num_stuff_classes, torch.full_like(winner, -1)
    )
    reassign_by_semantic_majority(
        semantic, len(semantic_logits), num_instances, num_stuff_classes, stuff_classes,
        instance_index,
    )  # fmt: skip
    if placeholder:
        # The official result labels the channel's remaining pixels with its class id 0,
        # which its class numbering reads as the last stuff class.
        stuff_classes[instance_index == 0] = num_stuff_classes
        instance_index.fill_(-1)
        candidates = candidates[:0]
    return panoptic_segments(
        stuff_classes, instance_index, candidates.pred_classes, candidates.scores,
        stuff_area_limit,
    )  # fmt: skip


def _resize_labels(labels: torch.Tensor, size) -> torch.Tensor:
    """Integer labels (H, W) resized (nearest) to ``size``."""
    resized = F.interpolate(labels[None, None].float(), size=tuple(size), mode="nearest")
    return resized[0, 0].long()


def reassign_by_semantic_majority(
    semantic: torch.Tensor,
    num_classes: int,
    num_instances: int,
    num_stuff_classes: int,
    stuff_classes: torch.Tensor,
    instance_index: torch.Tensor,
) -> None:
    """
    UPSNet's official post-processing rule: an instance whose pixels the semantic head labels
    (``semantic``, H x W labels in ``0..num_classes-1``: stuff ``0..S-1`` then things) at least
    half as one stuff class becomes that stuff (separated id, ``+ 1``); an instance whose
    majority is a thing class stays. Ties go to the lowest class. Updates ``stuff_classes`` and
    ``instance_index`` in place, for all instances at once.
    """
    if num_instances == 0:
        return
    inside = instance_index >= 0
    counts = torch.bincount(
        instance_index[inside] * num_classes + semantic[inside],
        minlength=num_instances * num_classes,
    ).view(num_instances, num_classes)
    largest, majority = counts.max(dim=1)
    becomes_stuff = (majority < num_stuff_classes) & (2 * largest >= counts.sum(dim=1))
    moved = inside & becomes_stuff[instance_index.clamp(min=0)]
    stuff_classes[moved] = majority[instance_index[moved]] + 1
    instance_index[moved] = -1
