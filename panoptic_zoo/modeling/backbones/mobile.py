"""
ImageNet-style mobile networks as detectron2 backbones with ResNet-like outputs: ``stem``
(stride 2) and ``res2``..``res5`` (strides 4, 8, 16, 32), so detectron2's FPN and every method's
heads take them like a ResNet.

* :class:`MobileNetV2Backbone`: torchvision's ``mobilenet_v2().features`` without the final
  1x1 conv to 1280 channels (parameter names ``features.<i>.*`` as torchvision's).
* :class:`EfficientNetLite0Backbone`: EfficientNet-Lite0 (no squeeze-excitation, ReLU6,
  TensorFlow "SAME" padding) with the parameter names of the lukemelas EfficientNet-PyTorch
  layout (``_conv_stem``, ``_bn0``, ``_blocks.<i>._expand_conv`` ...), without its head.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import Backbone
from torch import nn
from torchvision.models import mobilenet_v2

from .norm import norm_factory

__all__ = ["Conv2dSame", "EfficientNetLite0Backbone", "MobileNetV2Backbone"]

STAGES = ("stem", "res2", "res3", "res4", "res5")
STRIDES = {"stem": 2, "res2": 4, "res3": 8, "res4": 16, "res5": 32}


class StagedBackbone(Backbone):
    """
    A stem and a sequence of blocks cut into res2..res5 by index ranges. Subclasses define
    ``_stem``, ``_stem_modules``, ``blocks`` and ``STAGE_BLOCKS`` / ``CHANNELS``.
    """

    STAGE_BLOCKS: ClassVar[dict[str, tuple[int, int]]]
    CHANNELS: ClassVar[dict[str, int]]

    def __init__(self, out_features: list[str]):
        super().__init__()
        unknown = [f for f in out_features if f not in STAGES]
        if unknown or not out_features:
            raise ValueError(
                f"MODEL.MOBILE_BACKBONE.OUT_FEATURES must be a non-empty subset of {STAGES}, "
                f"got {list(out_features)}"
            )
        self._out_features = sorted(out_features, key=STAGES.index)
        self._out_feature_channels = {f: self.CHANNELS[f] for f in self._out_features}
        self._out_feature_strides = {f: STRIDES[f] for f in self._out_features}

    @property
    def blocks(self) -> nn.Module:
        """The blocks that ``STAGE_BLOCKS`` index."""
        raise NotImplementedError

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _stem_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = {}
        x = self._stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name, (start, end) in self.STAGE_BLOCKS.items():
            if len(outputs) == len(self._out_features):
                break  # stages past the last requested output are not run
            for i in range(start, end):
                x = self.blocks[i](x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def freeze(self, freeze_at: int) -> StagedBackbone:
        """
        detectron2's ``FREEZE_AT`` convention: 1 freezes the stem, k > 1 the stem and res2..res<k>.
        Frozen batch norms become ``FrozenBatchNorm2d`` so their statistics stay fixed too.
        """
        frozen = list(self._stem_modules())
        for name in STAGES[1:freeze_at]:
            start, end = self.STAGE_BLOCKS[name]
            frozen += [self.blocks[i] for i in range(start, end)]
        for module in frozen:
            for parameter in module.parameters():
                parameter.requires_grad_(False)
        if frozen:
            _freeze_batchnorms(self)
        return self


def _freeze_batchnorms(module: nn.Module) -> None:
    """Replace, in place, every batch norm whose parameters are all frozen by FrozenBatchNorm2d."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not any(
            p.requires_grad for p in child.parameters()
        ):
            setattr(module, name, FrozenBatchNorm2d.convert_frozen_batchnorm(child))
        else:
            _freeze_batchnorms(child)


class MobileNetV2Backbone(StagedBackbone):
    """MobileNetV2 (width 1.0): torchvision's ``features[0:18]``."""

    # features[0] is the stem; features[1] (stride 2, 16 channels) opens res2.
    STAGE_BLOCKS: ClassVar = {"res2": (1, 4), "res3": (4, 7), "res4": (7, 14), "res5": (14, 18)}
    CHANNELS: ClassVar = {"stem": 32, "res2": 24, "res3": 32, "res4": 96, "res5": 320}

    def __init__(self, out_features: list[str], norm: str = "FrozenBN"):
        super().__init__(out_features)
        # The final 1x1 conv to 1280 channels only serves classification.
        self.features = mobilenet_v2(weights=None, norm_layer=norm_factory(norm)).features[:18]

    @property
    def blocks(self) -> nn.Module:
        return self.features

    def _stem(self, x):
        return self.features[0](x)

    def _stem_modules(self):
        return [self.features[0]]


class Conv2dSame(nn.Conv2d):
    """
    ``nn.Conv2d`` with TensorFlow's "SAME" padding: output size ceil(input / stride), the odd
    pixel of padding at the bottom/right. EfficientNet-Lite's weights come from TensorFlow and
    were trained with it; symmetric padding would shift strided layers by half a pixel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride),
            reversed(self.dilation),
        ):  # fmt: skip
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(
            F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups
        )


class MBConvBlock(nn.Module):
    """EfficientNet-Lite's inverted residual: 1x1 expansion, depthwise conv, 1x1 projection."""

    def __init__(
        self, in_channels: int, out_channels: int, *, expand_ratio: int, kernel_size: int,
        stride: int, norm_layer: Callable[[int], nn.Module],
    ):  # fmt: skip
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand = expand_ratio != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = norm_layer(hidden)
        self._depthwise_conv = Conv2dSame(
            hidden, hidden, kernel_size, stride=stride, groups=hidden, bias=False
        )
        self._bn1 = norm_layer(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = norm_layer(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


# EfficientNet-B0's stages as (repeats, kernel, stride, expansion, in, out); Lite0 keeps them
# (width and depth 1.0) and drops squeeze-excitation and swish.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# TensorFlow's batch-norm epsilon, which the released weights were trained with.
LITE0_BN_EPS = 1e-3


class EfficientNetLite0Backbone(StagedBackbone):
    """EfficientNet-Lite0 without its head (1x1 conv to 1280 channels, pooling, classifier)."""

    STAGE_BLOCKS: ClassVar = {"res2": (0, 3), "res3": (3, 5), "res4": (5, 11), "res5": (11, 16)}
    CHANNELS: ClassVar = {"stem": 32, "res2": 24, "res3": 40, "res4": 112, "res5": 320}

    def __init__(self, out_features: list[str], norm: str = "FrozenBN"):
        super().__init__(out_features)
        norm_layer = norm_factory(norm, eps=LITE0_BN_EPS)
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = norm_layer(32)
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(
                    MBConvBlock(
                        c_in if i == 0 else c_out, c_out, expand_ratio=expand, kernel_size=kernel,
                        stride=stride if i == 0 else 1, norm_layer=norm_layer,
                    )
                )  # fmt: skip
        self._blocks = nn.ModuleList(blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    @property
    def blocks(self) -> nn.Module:
        return self._blocks

    def _stem(self, x):
        return F.relu6(self._bn0(self._conv_stem(x)))

    def _stem_modules(self):
        return [self._conv_stem, self._bn0]
