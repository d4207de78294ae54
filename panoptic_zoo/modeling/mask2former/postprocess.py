"""
Mask2Former post-processing of one image, as the official code's: the last prediction's masks
are upsampled to the padded input, cropped to the image and resized to the output size; then

* panoptic: queries whose best class is not "no object" and scores above the object-mask
  threshold are kept; each pixel goes to the kept query of the highest score x mask
  probability; a query's segment is its pixels there with its own probability >= 0.5, dropped
  when smaller than the overlap threshold times its mask (probability >= 0.5); all segments of
  one stuff class are one segment (the first one's id);
* semantic: per class, the sum over queries of class probability x mask probability;
* instances: the top-k (query, thing class) pairs by class probability, masks where the logit
  is > 0, scored by class probability x the mean mask probability inside the mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances

from ...postprocess import crop_and_resize, masks_above, panoptic_output

__all__ = ["Mask2FormerPostprocessor", "panoptic_merge"]


def panoptic_merge(
    scores: torch.Tensor,
    classes: torch.Tensor,
    mask_probs: torch.Tensor,
    num_thing_classes: int,
    overlap_threshold: float,
) -> tuple[torch.Tensor, list[dict]]:
    """
    The official merge of the kept queries, scores (n,), unified classes (n,) and mask
    probabilities (n, H, W), in query order: (segment ids (H, W) int32, segments_info with
    separated ``category_id`` (things 0..T-1, stuff 1..S), ``isthing``, ``area`` and, for
    things, ``score``).
    """
    segments = torch.zeros(mask_probs.shape[1:], dtype=torch.int32, device=mask_probs.device)
    segments_info: list[dict] = []
    if len(scores) == 0:
        return segments, segments_info
    owner = (scores[:, None, None] * mask_probs).argmax(0)
    stuff_segment: dict[int, dict] = {}
    for k, unified_class in enumerate(classes.tolist()):
        own = mask_probs[k] >= 0.5
        owned = owner == k
        owned_area, own_area = int(owned.sum()), int(own.sum())
        segment = owned & own
        area = int(segment.sum())
        if owned_area == 0 or own_area == 0 or area == 0:
            continue
        if owned_area / own_area < overlap_threshold:
            continue
        is_thing = unified_class < num_thing_classes
        if not is_thing and unified_class in stuff_segment:
            merged = stuff_segment[unified_class]
            segments[segment] = merged["id"]
            continue
        info = {"id": len(segments_info) + 1, "isthing": is_thing}
        if is_thing:
            info.update(category_id=unified_class, score=float(scores[k]))
        else:
            info["category_id"] = unified_class - num_thing_classes + 1
            stuff_segment[unified_class] = info
        segments[segment] = info["id"]
        segments_info.append(info)
    # Areas as painted: a later segment may take pixels of an earlier one.
    areas = torch.bincount(segments.flatten().long(), minlength=len(segments_info) + 1)
    for info in segments_info:
        info["area"] = int(areas[info["id"]])
    return segments, segments_info


class Mask2FormerPostprocessor:
    """One image's network outputs -> its ``panoptic_seg``, ``sem_seg`` and ``instances``."""

    def __init__(
        self,
        *,
        num_thing_classes: int,
        object_mask_threshold: float,
        overlap_threshold: float,
        max_detections: int,
    ):
        self.num_thing_classes = num_thing_classes
        self.object_mask_threshold = object_mask_threshold
        self.overlap_threshold = overlap_threshold
        self.max_detections = max_detections

    def __call__(self, class_logits, mask_logits, padded_size, image_size, output_size) -> dict:
        """
        One image's last prediction: class logits (Q, K+1) and mask logits (Q, h, w) at stride
        4 of the padded input of ``padded_size``; ``image_size`` is the unpadded input size,
        ``output_size`` the size to predict at. Returns ``panoptic_seg``, ``sem_seg`` (S+1 maps:
        channel 0 "any thing", then stuff 1..S, as the separated ids) and ``instances``.
        """
        mask_logits = F.interpolate(mask_logits[None], size=padded_size, mode="bilinear",
                                    align_corners=False)[0]  # fmt: skip
        mask_logits = crop_and_resize(mask_logits, image_size, *output_size)
        class_probs = class_logits.softmax(-1)
        mask_probs = mask_logits.sigmoid()

        scores, classes = class_probs.max(-1)
        keep = (classes != class_probs.shape[-1] - 1) & (scores > self.object_mask_threshold)
        panoptic = panoptic_merge(
            scores[keep], classes[keep], mask_probs[keep], self.num_thing_classes,
            self.overlap_threshold,
        )  # fmt: skip

        semantic = torch.einsum("qc,qhw->chw", class_probs[:, :-1], mask_probs)
        semantic = torch.cat(
            [semantic[: self.num_thing_classes].sum(0, keepdim=True),
             semantic[self.num_thing_classes:]]  # fmt: skip
        )
        return panoptic_output(
            panoptic, semantic, self._instances(class_probs, mask_logits, output_size)
        )

    def _instances(self, class_probs, mask_logits, output_size) -> Instances:
        probs = class_probs[:, :-1]
        num_classes = probs.shape[1]
        top_k = min(self.max_detections, probs.numel())
        scores, flat = probs.flatten().topk(top_k, sorted=False)
        classes, queries = flat % num_classes, flat // num_classes
        things = classes < self.num_thing_classes
        scores, classes, logits = scores[things], classes[things], mask_logits[queries[things]]
        masks, boxes = masks_above(logits, 0.0)
        mask_scores = (logits.sigmoid() * masks).flatten(1).sum(1) / (
            masks.flatten(1).sum(1) + 1e-6
        )
        instances = Instances(output_size)
        instances.pred_masks = masks
        instances.pred_boxes = Boxes(boxes)
        instances.scores = scores * mask_scores
        instances.pred_classes = classes
        return instances
