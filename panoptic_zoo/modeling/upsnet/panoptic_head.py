"""
UPSNet's parameter-free panoptic head, as pure tensor functions of one image.

With semantic logits X (stuff channels X_stuff, then thing channels X_thing) and, for each
instance i with box B_i, class C_i and mask logits Y_i:

* X_mask_i = channel C_i of X_thing inside B_i, 0 outside;
* Y_mask_i = Y_i resized into B_i, 0 outside;
* Z = [X_stuff, X_mask_1 + Y_mask_1, ..., X_mask_N + Y_mask_N, unknown], where the optional
  unknown logit is max(X_thing) - max_i(X_mask_i): high where the semantic head sees a thing
  that no instance explains.

The argmax over Z assigns every pixel to a stuff class, an instance or "unknown".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes
from torchvision.ops import nms

__all__ = [
    "box_masks",
    "mean_cross_entropy",
    "paste_mask_logits",
    "panoptic_candidates",
    "panoptic_logits",
    "panoptic_target",
]


def box_masks(boxes: torch.Tensor, height: int, width: int, first_row: int = 0) -> torch.Tensor:
    """
    (N, H, W) bool: pixels whose centers lie inside each box (N, 4; XYXY, pixels), for the
    ``height`` rows of the image from ``first_row`` on.
    """
    ys = torch.arange(first_row, first_row + height, device=boxes.device, dtype=boxes.dtype) + 0.5
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5
    x0, y0, x1, y1 = (c[:, None] for c in boxes.unbind(dim=1))
    inside_y = (ys[None] >= y0) & (ys[None] <= y1)
    inside_x = (xs[None] >= x0) & (xs[None] <= x1)
    return inside_y[:, :, None] & inside_x[:, None, :]


def pixel_boxes(boxes: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """
    The official code's pixel boxes for the panoptic head, from detectron2 boxes (N, 4; XYXY at
    the input resolution, far corner one past the box) scaled by ``scale`` (1 / stride in
    training, 1 in inference). The official box keeps Detectron's inclusive far corner (x1 - 1);
    scaled, its corners are truncated for the mask logits (pixels ``[trunc(x0), trunc(x1') + 1)``)
    and the far corner is rounded (half to even) for the semantic channel (``[trunc(x0),
    round(x1') + 1)``). Returns (mask boxes, semantic boxes), integer-valued, far corner one past.
    """
    official = (boxes - boxes.new_tensor([0.0, 0.0, 1.0, 1.0])) * scale
    start = official[:, :2].trunc()
    mask_boxes = torch.cat([start, official[:, 2:].trunc() + 1], dim=1)
    semantic_boxes = torch.cat([start, official[:, 2:].round() + 1], dim=1)
    return mask_boxes, semantic_boxes


def paste_mask_logits(mask_logits: torch.Tensor, boxes: torch.Tensor, height: int, width: int):
    """
    Mask logits (N, M, M) resized (bilinearly) into their boxes on an (H, W) canvas, 0 outside
    the boxes. Differentiable, unlike detectron2's thresholded paste.
    """
    if len(boxes) == 0:
        return mask_logits.new_zeros((0, height, width))
    ys = torch.arange(height, device=boxes.device, dtype=mask_logits.dtype) + 0.5
    xs = torch.arange(width, device=boxes.device, dtype=mask_logits.dtype) + 0.5
    x0, y0, x1, y1 = (c[:, None] for c in boxes.to(mask_logits.dtype).unbind(dim=1))
    # Box edges map to -1 and +1: grid_sample's convention with align_corners=False.
    grid_x = (xs[None] - x0) / (x1 - x0).clamp(min=1e-6) * 2 - 1
    grid_y = (ys[None] - y0) / (y1 - y0).clamp(min=1e-6) * 2 - 1
    grid = torch.stack(
        [
            grid_x[:, None, :].expand(-1, height, -1),
            grid_y[:, :, None].expand(-1, -1, width),
        ],
        dim=3,
    )
    # "border" keeps the logits at full strength up to the box edge; the box mask cuts outside.
    pasted = F.grid_sample(
        mask_logits[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False
    )[:, 0]
    return pasted * box_masks(boxes, height, width)


def panoptic_candidates(
    class_boxes: torch.Tensor,
    class_scores: torch.Tensor,
    image_size: tuple[int, int],
    score_thresh: float,
    nms_thresh: float,
    max_candidates: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    UPSNet's official panoptic candidates of one image: every (proposal, thing class) pair
    whose class probability exceeds ``score_thresh``, with that class's regressed box clipped
    to the image, then one class-agnostic NMS at ``nms_thresh`` and the ``max_candidates``
    best. ``class_boxes`` (R, K * 4 or 4) and ``class_scores`` (R, K + 1; background last) are
    the box predictor's ``predict_boxes`` and ``predict_probs``. Returns (boxes (N, 4), scores
    (N,), classes (N,)) by decreasing score.
    """
    num_classes = class_scores.shape[1] - 1
    boxes = Boxes(class_boxes.reshape(-1, 4))
    boxes.clip(image_size)
    per_proposal = class_boxes.shape[1] // 4  # K, or 1 for class-agnostic regression
    boxes = boxes.tensor.view(len(class_boxes), per_proposal, 4).expand(-1, num_classes, -1)
    scores = class_scores[:, :-1]
    proposal, classes = torch.nonzero(scores > score_thresh, as_tuple=True)
    boxes, scores = boxes[proposal, classes], scores[proposal, classes]
    keep = nms(boxes, scores, nms_thresh)[:max_candidates]
    return boxes[keep], scores[keep], classes[keep]


def panoptic_logits(
    semantic_logits: torch.Tensor,
    num_stuff_classes: int,
    boxes: torch.Tensor,
    classes: torch.Tensor,
    pasted_mask_logits: torch.Tensor,
    with_unknown: bool,
    first_row: int = 0,
) -> torch.Tensor:
    """
    Z (S + N [+ 1], H, W) from semantic logits X (S + T, H, W), the boxes (N, 4; XYXY in X's
    pixels) in which X_mask takes its class channel (the semantic boxes of
    :func:`pixel_boxes`), thing classes (N,; 0..T-1) and pasted mask logits (N, H, W) from
    :func:`paste_mask_logits`. Channel S + i is instance i; the last is "unknown" when asked.
    X and the pasted logits may be the rows from ``first_row`` on of the image's (inference in
    row chunks).
    """
    height, width = semantic_logits.shape[-2:]
    stuff = semantic_logits[:num_stuff_classes]
    things = semantic_logits[num_stuff_classes:]
    inside = box_masks(boxes, height, width, first_row)
    semantic_instance = things[classes] * inside  # X_mask
    channels = [stuff, semantic_instance + pasted_mask_logits]
    if with_unknown:
        # Outside every box max_i(X_mask_i) is 0 (X_mask is 0 there), also with no instances.
        explained = semantic_instance.amax(dim=0) if len(boxes) else things.new_zeros(())
        channels.append((things.amax(dim=0) - explained)[None])
    return torch.cat(channels, dim=0)


def panoptic_target(
    gt_semantic: torch.Tensor,
    num_stuff_classes: int,
    kept_masks: torch.Tensor,
    with_unknown: bool,
    ignore_value: int,
    semantic_ignore_value: int = 255,
) -> torch.Tensor:
    """
    The per-pixel channel of Z to predict, UPSNet's official target: the stuff class for stuff
    pixels (``gt_semantic`` < S), S + i for the pixels of kept instance i (whatever their
    semantic label), and for the other thing pixels (dropped instances, crowd and group
    regions) the unknown channel S + N_kept when there is one, else ``ignore_value``, as for
    void (``semantic_ignore_value``). ``ignore_value`` must not be a channel index (e.g. -1:
    images may hold hundreds of instances).
    """
    target = torch.full_like(gt_semantic, ignore_value)
    stuff = gt_semantic < num_stuff_classes
    target[stuff] = gt_semantic[stuff]
    if with_unknown:
        unexplained = ~stuff & (gt_semantic != semantic_ignore_value)
        target[unexplained] = num_stuff_classes + len(kept_masks)
    for index, mask in enumerate(kept_masks):
        target[mask] = num_stuff_classes + index
    return target


def mean_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int):
    """
    Cross-entropy of logits (N, C, ...) against ``target`` (N, ...) averaged over every target
    element, ignored ones included (they add 0): the official panoptic and RoI losses
    (``nn.CrossEntropyLoss(reduce=False)`` then ``.mean()``), not PyTorch's mean over the
    labelled elements.
    """
    loss = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    return loss / max(target.numel(), 1)
