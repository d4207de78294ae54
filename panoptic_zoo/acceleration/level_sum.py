"""UPSNet's semantic predictor computed level by level (:class:`LevelSumPredictor`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling.upsnet.semantic_head import ConcatenatedLevelsPredictor
from .modules import adopt_state, replace_modules

__all__ = ["LevelSumPredictor", "use_level_sum_predictor"]


class LevelSumPredictor(ConcatenatedLevelsPredictor):
    """
    :class:`~panoptic_zoo.modeling.upsnet.semantic_head.ConcatenatedLevelsPredictor` computed
    level by level: resizing and a 1x1 convolution are both linear, so each level convolved at
    its own resolution with its slice of the weights, then resized, and the levels summed give
    the same logits (to float rounding) without the concatenated map, and with the coarse
    levels' products at their own size (UPSNet at 800x1333: 9.2 -> 3.0 GFLOP). The logits are
    NCHW-contiguous whatever the levels' memory format (the panoptic head gathers whole class
    planes from them).
    """

    def forward(self, levels: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Logits [N, out_channels, *size], NCHW-contiguous, of ``levels`` [N, in_channels, h, w]
        (either memory format), in the order of the concatenation they stand for."""
        weights = self.weight.flatten(1).split(self.in_channels, dim=1)
        if len(weights) != len(levels):
            raise ValueError(f"expected {len(weights)} levels, got {len(levels)}")
        logits = None
        for level, weight in zip(levels, weights):
            # [N, K, C] x [N, C, h * w]: NCHW logits, read from a channels-last level with no
            # copy (flatten(2) is a view in both formats). bmm rather than matmul: fvcore counts
            # a broadcast matmul's FLOPs for one image only.
            batch, _, height, width = level.shape
            level_logits = torch.bmm(weight.expand(batch, -1, -1), level.flatten(2))
            level_logits = level_logits.view(batch, -1, height, width)
            if (height, width) != tuple(size):
                level_logits = F.interpolate(
                    level_logits, size=size, mode="bilinear", align_corners=False
                )
            logits = level_logits if logits is None else logits.add_(level_logits)
        return logits.add_(self.bias[:, None, None])


def _level_sum(predictor: ConcatenatedLevelsPredictor) -> LevelSumPredictor:
    out_channels, channels = predictor.weight.shape[:2]
    levels = channels // predictor.in_channels
    replacement = LevelSumPredictor(predictor.in_channels, levels, out_channels)
    return adopt_state(replacement, predictor)


def use_level_sum_predictor(model: nn.Module) -> int:
    """Replace every :class:`ConcatenatedLevelsPredictor` of ``model`` by a
    :class:`LevelSumPredictor` with the same parameters, in place; returns how many."""
    return replace_modules(model, lambda m: type(m) is ConcatenatedLevelsPredictor, _level_sum)
