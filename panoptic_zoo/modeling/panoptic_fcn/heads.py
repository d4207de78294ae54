"""
Panoptic FCN's heads: the kernel generator (position head + kernel head, shared by all of
P3-P7) and the feature encoder (semantic FPN over P2-P5 at stride 4 + coordinate convolutions).
"""

from __future__ import annotations

import math

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from torch import nn

from ...layers import DeformableConv3x3

__all__ = [
    "FeatureEncoder",
    "KernelGenerator",
    "with_coordinates",
]


def with_coordinates(x: torch.Tensor) -> torch.Tensor:
    """
    ``x`` with two more channels (CoordConv): the row coordinate, then the column coordinate,
    each from -1 to 1 over the map. The official ``coord_conv`` order, which converted
    checkpoints' first kernel-head and encoder convolutions expect.
    """
    n, _, h, w = x.shape
    rows = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    columns = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    grid_rows, grid_columns = torch.meshgrid(rows, columns, indexing="ij")
    coords = torch.stack([grid_rows, grid_columns]).expand(n, 2, h, w)
    return torch.cat([x, coords], dim=1)


class DeformConvBlock(nn.Module):
    """3x3 modulated deformable convolution (DCNv2, as the official heads use), norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: str):
        super().__init__()
        self.conv = DeformableConv3x3(in_channels, out_channels, bias=not norm, modulated=True)
        # Official initialisation: detectron2's ModulatedDeformConv (Kaiming uniform for ReLU,
        # zero bias) after an offset/modulation convolution with PyTorch's default one.
        nn.init.kaiming_uniform_(self.conv.weight, nonlinearity="relu")
        self.conv.offset.reset_parameters()
        self.norm = get_norm(norm, out_channels) or nn.Identity()

    def forward(self, x):
        return F.relu(self.norm(self.conv(x)))


def conv_tower(
    in_channels: int, channels: int, num_convs: int, norm: str, deform: bool = False
) -> nn.Sequential:
    """``num_convs`` 3x3 convolutions (deformable if ``deform``) with norm and ReLU, with the
    official heads' initialisation (plain convolutions keep PyTorch's default one)."""
    layers = []
    for i in range(num_convs):
        c_in = in_channels if i == 0 else channels
        if deform:
            layers.append(DeformConvBlock(c_in, channels, norm))
            continue
        conv = Conv2d(
            c_in, channels, 3, padding=1, bias=not norm, norm=get_norm(norm, channels),
            activation=F.relu,
        )  # fmt: skip
        layers.append(conv)
    return nn.Sequential(*layers)


class KernelGenerator(nn.Module):
    """
    Position head (thing centers and stuff regions as heatmaps) and kernel head (kernel
    features per position, from features + coordinates), run with the same weights on every
    level; then one 1x1 projection to the feature encoder's width for thing kernels and
    another for stuff kernels (the official ThingGenerator / StuffGenerator embeddings).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_thing_classes: int,
        num_stuff_classes: int,
        kernel_dim: int,
        position_convs: int,
        position_dim: int,
        position_norm: str,
        position_deform: bool,
        prior_prob: float,
        kernel_convs: int,
        kernel_convs_dim: int,
        kernel_norm: str,
    ):
        super().__init__()
        self.position_tower = conv_tower(
            in_channels, position_dim, position_convs, position_norm, position_deform
        )
        self.thing_scores = nn.Conv2d(position_dim, num_thing_classes, 3, padding=1)
        # Stuff classes 1..S plus class 0 ("any thing"), as in the separated semantic map.
        self.stuff_scores = nn.Conv2d(position_dim, num_stuff_classes + 1, 3, padding=1)
        self.kernel_tower = conv_tower(in_channels + 2, kernel_convs_dim, kernel_convs, kernel_norm)
        self.kernel_output = nn.Conv2d(kernel_convs_dim, kernel_convs_dim, 3, padding=1)
        self.thing_embed = nn.Conv2d(kernel_convs_dim, kernel_dim, 1)
        self.stuff_embed = nn.Conv2d(kernel_convs_dim, kernel_dim, 1)
        prior_bias = -math.log((1 - prior_prob) / prior_prob)
        convs = (self.thing_scores, self.stuff_scores, self.kernel_output, self.thing_embed,
                 self.stuff_embed)  # fmt: skip
        for conv in convs:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.thing_scores.bias, prior_bias)
        nn.init.constant_(self.stuff_scores.bias, prior_bias)

    def forward(self, features: list[torch.Tensor]):
        """
        Per level: thing logits (N, T, h, w), stuff logits (N, S+1, h, w), thing kernels
        (N, C, h, w) and the kernel features (N, K, h, w) stuff kernels are pooled from. Thing
        kernels are projected at every position (a 1x1 projection of every position equals
        projecting the positions selected later); stuff kernels are projected after pooling
        (:meth:`embed_stuff`), because the projection's bias is not scaled by the pooling.
        """
        positions = [self.position_tower(x) for x in features]
        kernel_features = [
            self.kernel_output(self.kernel_tower(with_coordinates(x))) for x in features
        ]
        return (
            [self.thing_scores(x) for x in positions],
            [self.stuff_scores(x) for x in positions],
            [self.thing_embed(x) for x in kernel_features],
            kernel_features,
        )

    def embed_stuff(self, pooled: torch.Tensor) -> torch.Tensor:
        """Stuff kernels (m, C) from pooled kernel features (m, K)."""
        return F.linear(pooled, self.stuff_embed.weight.flatten(1), self.stuff_embed.bias)


class FeatureEncoder(nn.Module):
    """
    Semantic FPN (each of P2-P5 brought to stride 4 by conv + 2x upsampling stages, then summed),
    coordinate channels, and ``num_convs`` convolutions (norm, ReLU) to ``channels`` (the
    kernels' width), as the official encoder.
    """

    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        fpn_dim: int,
        fpn_norm: str,
        norm: str,
        num_convs: int,
        channels: int,
        deform: bool,
    ):
        super().__init__()
        if num_convs < 1:
            raise ValueError("MODEL.PANOPTIC_FCN.FEATURE_ENCODER.NUM_CONVS must be at least 1")
        self.in_features = list(input_shape)
        self.common_stride = min(s.stride for s in input_shape.values())
        self.scale_heads = nn.ModuleList()
        for name, shape in input_shape.items():
            stages = max(1, int(math.log2(shape.stride / self.common_stride)))
            layers = []
            for k in range(stages):
                conv = Conv2d(
                    shape.channels if k == 0 else fpn_dim, fpn_dim, 3, padding=1,
                    bias=not fpn_norm, norm=get_norm(fpn_norm, fpn_dim), activation=F.relu,
                )  # fmt: skip
                weight_init.c2_msra_fill(conv)
                layers.append(conv)
                if shape.stride != self.common_stride:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self.tower = conv_tower(fpn_dim + 2, channels, num_convs, norm, deform)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        x = None
        for name, head in zip(self.in_features, self.scale_heads):
            y = head(features[name])
            x = y if x is None else x + y
        return self.tower(with_coordinates(x))
