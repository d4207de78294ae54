"""Normalization layers of the mobile backbones, chosen by name like detectron2's ``get_norm``."""

from __future__ import annotations

import math
from collections.abc import Callable

from detectron2.layers import FrozenBatchNorm2d
from torch import nn

__all__ = ["NORMS", "norm_factory"]

NORMS = ("", "BN", "SyncBN", "FrozenBN", "GN")


def norm_factory(norm: str, eps: float = 1e-5) -> Callable[[int], nn.Module]:
    """
    ``channels -> module`` for ``norm`` (one of :data:`NORMS`). ``eps`` is the one the pretrained
    weights were trained with. "GN" uses up to 32 groups but never more than the channels
    allow: mobile backbones have layers of 16 or 24 channels, where detectron2's fixed 32 groups fail.
    """
    if norm not in NORMS:
        raise ValueError(f"MODEL.MOBILE_BACKBONE.NORM must be one of {NORMS}, got {norm!r}")
    if norm == "":
        return lambda channels: nn.Identity()
    if norm == "BN":
        return lambda channels: nn.BatchNorm2d(channels, eps=eps)
    if norm == "SyncBN":
        return lambda channels: nn.SyncBatchNorm(channels, eps=eps)
    if norm == "FrozenBN":
        return lambda channels: FrozenBatchNorm2d(channels, eps=eps)
    return lambda channels: nn.GroupNorm(math.gcd(32, channels), channels)
