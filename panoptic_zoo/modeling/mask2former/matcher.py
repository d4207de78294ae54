"""
Hungarian matching of queries to ground-truth segments, one image at a time, with the mask
costs computed on points sampled uniformly (the same points for all masks of the image).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.projects.point_rend.point_features import point_sample
from scipy.optimize import linear_sum_assignment

__all__ = ["HungarianMatcher", "pairwise_dice_cost", "pairwise_sigmoid_ce_cost"]


def pairwise_sigmoid_ce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over P points of every (prediction, target) pair:
    logits (Q, P), targets (M, P) in {0, 1} -> (Q, M)."""
    positive = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    negative = F.binary_cross_entropy_with_logits(
        logits, torch.zeros_like(logits), reduction="none"
    )
    cost = positive @ targets.t() + negative @ (1 - targets).t()
    return cost / logits.shape[1]


def pairwise_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - (2 |p t| + 1) / (|p| + |t| + 1) of every pair, p = sigmoid(logits): (Q, M)."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.t()
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher:
    """
    Cost = class_weight * (-p(target class)) + mask_weight * point BCE + dice_weight * point
    dice; scipy's ``linear_sum_assignment`` on it. Points are drawn with ``torch.rand`` on the
    predictions' device (seed torch to reproduce them).
    """

    def __init__(
        self, class_weight: float, mask_weight: float, dice_weight: float, num_points: int
    ):
        if class_weight == 0 and mask_weight == 0 and dice_weight == 0:
            raise ValueError("MODEL.MASK2FORMER.LOSS: the class, mask and dice weights are all 0")
        self.class_weight = class_weight
        self.mask_weight = mask_weight
        self.dice_weight = dice_weight
        self.num_points = num_points

    @torch.no_grad()
    def __call__(self, class_logits, mask_logits, targets):
        """
        class_logits (N, Q, K+1), mask_logits (N, Q, h, w); targets: per image a dict of
        ``labels`` (M,) and ``masks`` (M, H, W) on the padded image. Returns per image
        (query indices, target indices), int64, in increasing query order.
        """
        matches = []
        for image_logits, image_masks, target in zip(class_logits, mask_logits, targets):
            labels = target["labels"]
            cost_class = -image_logits.softmax(-1)[:, labels]
            points = torch.rand(1, self.num_points, 2, device=image_masks.device)
            target_masks = target["masks"].to(image_masks)
            target_points = point_sample(
                target_masks[:, None], points.repeat(len(target_masks), 1, 1), align_corners=False
            )[:, 0].float()
            predicted_points = point_sample(
                image_masks[:, None], points.repeat(len(image_masks), 1, 1), align_corners=False
            )[:, 0].float()
            cost = (
                self.mask_weight * pairwise_sigmoid_ce_cost(predicted_points, target_points)
                + self.class_weight * cost_class
                + self.dice_weight * pairwise_dice_cost(predicted_points, target_points)
            )
            queries, targets_index = linear_sum_assignment(cost.cpu())
            matches.append((torch.as_tensor(queries, dtype=torch.int64),
                            torch.as_tensor(targets_index, dtype=torch.int64)))  # fmt: skip
        return matches
