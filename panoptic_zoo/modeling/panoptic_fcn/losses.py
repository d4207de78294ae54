"""Panoptic FCN's losses: sigmoid focal loss for the heatmaps and the weighted dice loss."""

from __future__ import annotations

import torch
from fvcore.nn import sigmoid_focal_loss

__all__ = ["dice_loss", "sigmoid_focal_loss", "weighted_dice_loss"]

# Keeps the dice of an empty prediction against an empty target at 0 instead of NaN.
DICE_EPS = 1e-5


def dice_loss(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """
    1 - (2 sum(p t) + eps) / (sum(p^2) + sum(t^2) + eps) over the trailing two (spatial) dims;
    ``targets`` broadcasts against ``probs`` (e.g. (n, 1, H, W) against (n, k, H, W)).
    """
    inter = (probs * targets).sum(dim=(-2, -1))
    denom = (probs * probs).sum(dim=(-2, -1)) + (targets * targets).sum(dim=(-2, -1))
    return 1 - (2 * inter + DICE_EPS) / (denom + DICE_EPS)


def weighted_dice_loss(
    probs: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """
    Sum over objects of sum_k w_k Dice(P_k, Y): ``probs`` (n, k, H, W) are the masks of each
    object's k kernels, ``targets`` (n, H, W) its mask, ``weights`` (n, k) sum to 1 per object
    (0 for unused slots). Divided by the number of objects by the caller.
    """
    return (dice_loss(probs, targets[:, None]) * weights).sum()
