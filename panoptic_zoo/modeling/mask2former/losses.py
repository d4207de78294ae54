"""
Mask2Former's set loss: every prediction (the learnable queries' and each decoder layer's, with
deep supervision) is matched to the ground truth by :class:`HungarianMatcher` on its own, then
weighted cross-entropy on the classes ("no object" for unmatched queries) and sigmoid BCE +
dice on points of the matched masks, sampled by PointRend's importance sampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.projects.point_rend.point_features import (
    get_uncertain_point_coords_with_randomness,
    point_sample,
)
from detectron2.utils import comm

from .matcher import HungarianMatcher

__all__ = ["Mask2FormerLoss"]


def _uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Points near the decision boundary (logit 0) are the most uncertain."""
    return -logits.abs()


class Mask2FormerLoss:
    """
    ``__call__(class_logits, mask_logits, targets)`` with the per-prediction lists of
    :class:`MaskedAttentionDecoder` -> weighted losses ``loss_ce``, ``loss_mask``, ``loss_dice``
    of the last prediction and ``loss_*_{i}`` of prediction i before it (the official names).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        matcher: HungarianMatcher,
        class_weight: float,
        mask_weight: float,
        dice_weight: float,
        no_object_weight: float,
        deep_supervision: bool,
        num_points: int,
        oversample_ratio: float,
        importance_sample_ratio: float,
    ):
        self.num_classes = num_classes
        self.matcher = matcher
        self.weights = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        self.class_weights = torch.ones(num_classes + 1)
        self.class_weights[-1] = no_object_weight
        self.deep_supervision = deep_supervision
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio

    def __call__(self, class_logits, mask_logits, targets):
        device = mask_logits[-1].device
        num_masks = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(num_masks)
        num_masks = max(num_masks.item() / comm.get_world_size(), 1.0)

        # The last prediction first, then the earlier ones: the official order, which fixes the
        # order of the random point draws.
        order = [len(class_logits) - 1]
        if self.deep_supervision:
            order += list(range(len(class_logits) - 1))
        losses = {}
        for index in order:
            matches = self.matcher(class_logits[index], mask_logits[index], targets)
            suffix = "" if index == len(class_logits) - 1 else f"_{index}"
            terms = {
                "loss_ce": self._class_loss(class_logits[index], targets, matches),
                **self._mask_losses(mask_logits[index], targets, matches, num_masks),
            }
            losses.update({f"{k}{suffix}": v * self.weights[k] for k, v in terms.items()})
        return losses

    def _class_loss(self, logits, targets, matches):
        classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64,
                             device=logits.device)  # fmt: skip
        for image, (target, (queries, indices)) in enumerate(zip(targets, matches)):
            classes[image, queries.to(logits.device)] = target["labels"][indices.to(logits.device)]
        return F.cross_entropy(logits.float().transpose(1, 2), classes,
                               self.class_weights.to(logits.device))  # fmt: skip

    def _mask_losses(self, mask_logits, targets, matches, num_masks):
        predicted = torch.cat([mask_logits[i, q] for i, (q, _) in enumerate(matches)])[:, None]
        wanted = torch.cat(
            [t["masks"][j.to(t["masks"].device)] for t, (_, j) in zip(targets, matches)]
        ).to(predicted)[:, None]
        with torch.no_grad():
            points = get_uncertain_point_coords_with_randomness(
                predicted, _uncertainty, self.num_points, self.oversample_ratio,
                self.importance_sample_ratio,
            )  # fmt: skip
            labels = point_sample(wanted, points, align_corners=False)[:, 0]
        logits = point_sample(predicted, points, align_corners=False)[:, 0]
        bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        probs = logits.sigmoid()
        dice = 1 - (2 * (probs * labels).sum(-1) + 1) / (probs.sum(-1) + labels.sum(-1) + 1)
        return {"loss_mask": bce.mean(1).sum() / num_masks, "loss_dice": dice.sum() / num_masks}
