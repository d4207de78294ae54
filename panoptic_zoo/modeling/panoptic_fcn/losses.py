"""
Panoptic FCN's losses, as the official implementation computes them: sigmoid focal loss on the
thing and stuff heatmaps, and the weighted dice loss on the masks of thing and stuff kernels.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from fvcore.nn import sigmoid_focal_loss

from .targets import PanopticFCNTargets

__all__ = ["PanopticFCNLoss", "dice_loss", "sigmoid_focal_loss", "weighted_dice_loss"]

# Lower bound of the dice denominator (only reached by an empty prediction and target).
DICE_EPS = 1e-8
# Thing kernels are taken where the thing's mask, resampled to the level, exceeds this.
GUIDE_MASK_THRESH = 0.1


def dice_loss(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """
    1 - 2 sum(p t) / max(sum(p^2) + sum(t^2), eps) over the trailing two (spatial) dims;
    ``targets`` broadcasts against ``probs`` (e.g. (n, 1, H, W) against (n, k, H, W)).
    """
    inter = (probs * targets).sum(dim=(-2, -1))
    denom = (probs * probs).sum(dim=(-2, -1)) + (targets * targets).sum(dim=(-2, -1))
    return 1 - 2 * inter / denom.clamp(min=DICE_EPS)


def weighted_dice_loss(
    probs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """
    Sum over objects of sum_k w_k Dice(P_k, Y): ``probs`` (n, k, H, W) are the masks of each
    object's k kernels, ``targets`` (n, H, W) its mask, ``weights`` (n, k) sum to 1 per object
    (0 for unused slots). Divided by the number of objects by the caller.
    """
    return (dice_loss(probs, targets[:, None]) * weights).sum()


class PanopticFCNLoss:
    """
    The four loss terms of a batch from the network's outputs and each image's targets:

    * ``loss_pos_things``: focal loss on the thing heatmaps, summed over levels, images, classes
      and positions, / number of thing assignments;
    * ``loss_pos_stuff``: focal loss on the stuff heatmaps, averaged over each level's
      positions, summed over levels and classes, / number of images;
    * ``loss_seg_things``: each assigned thing takes the kernels at the k highest scores of its
      class channel among the cells its resampled mask covers (> 0.1); weights = those scores
      normalised to 1, not detached (the segment loss also trains the thing heatmaps);
      sum_k w_k Dice, / number of thing assignments;
    * ``loss_seg_stuff``: each (level, stuff class on that level) gets one kernel, the average
      over the level of its kernel features inside the class's positive cells (the mean over
      the region scaled by the region's fraction of the level), embedded; Dice, / number of
      such (level, class) pairs.
    """

    def __init__(
        self,
        *,
        focal_alpha: float,
        focal_gamma: float,
        position_weight: float,
        segment_weight: float,
        top_k_points: int,
    ):
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.position_weight = position_weight
        self.segment_weight = segment_weight
        self.top_k_points = top_k_points

    def __call__(
        self,
        thing_logits: list[torch.Tensor],
        stuff_logits: list[torch.Tensor],
        thing_kernels: list[torch.Tensor],
        kernel_features: list[torch.Tensor],
        embed_stuff: Callable[[torch.Tensor], torch.Tensor],
        encoded: torch.Tensor,
        targets: list[PanopticFCNTargets],
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            thing_logits, stuff_logits: per level (N, T, h, w) and (N, S + 1, h, w).
            thing_kernels: per level (N, C, h, w), every position's kernel features through
                the thing embedding.
            kernel_features: per level (N, K, h, w), the kernel head's features.
            embed_stuff: the stuff embedding, pooled kernel features (m, K) -> kernels (m, C).
            encoded: (N, C, H_e, W_e) feature encoder output.
            targets: one per image.
        """
        focal = dict(alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="none")
        num_things = sum(len(a.instance) for t in targets for a in t.assignments)
        pos_things = sum(
            sigmoid_focal_loss(logits[b], t.thing_heatmaps[level], **focal).sum()
            for level, logits in enumerate(thing_logits)
            for b, t in enumerate(targets)
        )
        pos_stuff = sum(
            sigmoid_focal_loss(logits[b], t.stuff_maps[level], **focal).flatten(1).mean(1).sum()
            for level, logits in enumerate(stuff_logits)
            for b, t in enumerate(targets)
        )
        seg_things, seg_stuff, num_stuff = encoded.new_zeros(()), encoded.new_zeros(()), 0
        for b, t in enumerate(targets):
            features = encoded[b]
            for level, assignment in enumerate(t.assignments):
                if len(assignment.instance):
                    masks = t.thing_masks[assignment.instance]
                    kernels, weights = self._thing_kernels(
                        thing_logits[level][b], thing_kernels[level][b], masks, assignment
                    )
                    probs = torch.einsum("nkc,chw->nkhw", kernels, features).sigmoid()
                    seg_things = seg_things + weighted_dice_loss(probs, masks, weights)
                classes = t.stuff_classes[level]
                if len(classes):
                    region = t.stuff_maps[level][classes] > 0
                    kernels = embed_stuff(_pool_over_level(kernel_features[level][b], region))
                    probs = torch.einsum("mc,chw->mhw", kernels, features).sigmoid()
                    seg_stuff = seg_stuff + dice_loss(probs, t.stuff_masks[classes]).sum()
                    num_stuff += len(classes)
        return {
            "loss_pos_things": self.position_weight * pos_things / max(1, num_things),
            "loss_pos_stuff": self.position_weight * pos_stuff / len(targets),
            "loss_seg_things": self.segment_weight * seg_things / max(1, num_things),
            "loss_seg_stuff": self.segment_weight * seg_stuff / max(1, num_stuff),
        }

    def _thing_kernels(self, logits, kernels, masks, assignment):
        """
        Kernels (n, k, C) at the k highest scores of each thing's class channel among the cells
        its mask covers, and weights (n, k) = those scores normalised to sum to 1 (0 for the
        slots a region of fewer than k cells cannot fill; k is capped at the level's size).
        """
        _, h, w = logits.shape
        guide = F.interpolate(masks[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        scores = logits[assignment.classes].sigmoid()
        scores = torch.where(guide > GUIDE_MASK_THRESH, scores, torch.zeros_like(scores))
        values, positions = scores.flatten(1).topk(min(self.top_k_points, h * w), dim=1)
        weights = values / values.sum(dim=1, keepdim=True).clamp(min=DICE_EPS)
        return kernels.flatten(1).T[positions], weights


def _pool_over_level(features: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """(m, K): the sum of ``features`` (K, h, w) over each of ``regions`` (m, h, w) divided by
    the level's size h * w (the official average pool of the features masked by the region:
    its mean scaled by the region's fraction of the level)."""
    size = regions.shape[-2] * regions.shape[-1]
    return regions.flatten(1).to(features.dtype) @ features.flatten(1).T / size
