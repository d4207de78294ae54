"""
Mask2Former's pixel decoder: a multi-scale deformable-attention encoder over the coarse
backbone levels (res3-res5), then FPN-style laterals down to stride 4 (res2). It gives the
per-pixel mask embeddings (stride 4) and the three coarsest scales the transformer decoder
attends to, coarse to fine.
"""

from __future__ import annotations

import math

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from torch import nn

from .deformable_attention import MultiScaleDeformableAttention

__all__ = ["DeformableEncoderLayer", "MSDeformAttnPixelDecoder", "sine_position_embedding"]

# The transformer decoder always attends to three scales.
DECODER_SCALES = 3


def sine_position_embedding(
    height: int, width: int, dim: int, device=None, temperature: float = 10000.0
) -> torch.Tensor:
    """
    DETR's normalized sine embedding of a (height, width) grid: (dim, height, width), the first
    half encoding y, the second x; positions (1..n) / (n + 1e-6) * 2 pi, sines and cosines
    interleaved at frequencies temperature^(2 floor(i / 2) / (dim / 2)).
    """
    half = dim // 2
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device) / (height + eps) * scale
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device) / (width + eps) * scale
    steps = torch.arange(half, dtype=torch.float32, device=device)
    frequencies = temperature ** (2 * torch.div(steps, 2, rounding_mode="floor") / half)

    def encode(positions):  # (n,) -> (n, half), sin/cos interleaved
        angles = positions[:, None] / frequencies
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(y).t()[:, :, None].expand(half, height, width)
    pos_x = encode(x).t()[:, None, :].expand(half, height, width)
    return torch.cat((pos_y, pos_x), dim=0)


class DeformableEncoderLayer(nn.Module):
    """Deformable self-attention over all levels, then a ReLU FFN; post-norm, residuals."""

    def __init__(
        self, dim: int, ffn_dim: int, dropout: float, levels: int, heads: int, points: int
    ):
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(dim, levels, heads, points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, features, position, reference_points, level_shapes):
        attended = self.self_attn(features + position, reference_points, features, level_shapes)
        features = self.norm1(features + self.dropout1(attended))
        hidden = self.linear2(self.dropout2(F.relu(self.linear1(features))))
        return self.norm2(features + self.dropout3(hidden))


def _reference_points(level_shapes, batch: int, device) -> torch.Tensor:
    """Every cell centre of every level, in [0, 1] of its level: (N, sum(h w), levels, 2)."""
    points = []
    for h, w in level_shapes:
        y = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        x = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(y, x, indexing="ij")
        points.append(torch.stack((grid_x.flatten(), grid_y.flatten()), -1))
    points = torch.cat(points)  # the same (x, y) on each level: no padding masks (official)
    return points[None, :, None, :].expand(batch, -1, len(level_shapes), -1)


class MSDeformAttnPixelDecoder(nn.Module):
    """
    ``forward(features)`` -> (mask features (N, MASK_DIM, H/4, W/4), the decoder's three scales
    coarse to fine, each (N, CONVS_DIM, h, w)).
    """

    def __init__(
        self,
        input_shapes: dict[str, ShapeSpec],
        *,
        encoder_features: list[str],
        conv_dim: int,
        mask_dim: int,
        norm: str,
        encoder_layers: int,
        encoder_heads: int,
        encoder_points: int,
        encoder_ffn_dim: int,
        encoder_dropout: float,
        common_stride: int = 4,
    ):
        super().__init__()
        by_stride = sorted(input_shapes.items(), key=lambda item: item[1].stride)
        encoder_shapes = [(name, shape) for name, shape in by_stride if name in encoder_features]
        if len(encoder_shapes) != len(encoder_features):
            raise ValueError(
                f"MODEL.MASK2FORMER.PIXEL_DECODER.ENCODER_IN_FEATURES {encoder_features} must be "
                f"among its IN_FEATURES {[name for name, _ in by_stride]}"
            )
        # Coarse to fine, as the encoder's levels and the decoder's scales.
        self.encoder_features = [name for name, _ in encoder_shapes][::-1]
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(shape.channels, conv_dim, kernel_size=1),
                          nn.GroupNorm(32, conv_dim))  # fmt: skip
            for _, shape in encoder_shapes[::-1]
        )
        levels = len(encoder_shapes)
        self.encoder = nn.ModuleList(
            DeformableEncoderLayer(conv_dim, encoder_ffn_dim, encoder_dropout, levels,
                                   encoder_heads, encoder_points)  # fmt: skip
            for _ in range(encoder_layers)
        )
        self.level_embed = nn.Parameter(torch.empty(levels, conv_dim))

        # Laterals for the levels finer than the encoder's, down to the common stride.
        finest_encoded = min(shape.stride for _, shape in encoder_shapes)
        lateral_count = int(math.log2(finest_encoded) - math.log2(common_stride))
        self.lateral_features = [name for name, _ in by_stride[:lateral_count]][::-1]
        use_bias = norm == ""
        self.lateral_convs = nn.ModuleList()
        self.output_convs = nn.ModuleList()
        for name in self.lateral_features:
            lateral = Conv2d(input_shapes[name].channels, conv_dim, kernel_size=1, bias=use_bias,
                             norm=get_norm(norm, conv_dim))  # fmt: skip
            output = Conv2d(conv_dim, conv_dim, kernel_size=3, padding=1, bias=use_bias,
                            norm=get_norm(norm, conv_dim), activation=F.relu)  # fmt: skip
            self.lateral_convs.append(lateral)
            self.output_convs.append(output)
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1)
        self.conv_dim = conv_dim
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # The official initialisation: Xavier for the encoder's matrices (then the deformable
        # attention's own), normal level embeddings, Caffe2 Xavier for the convolutions.
        for parameter in self.encoder.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
        for module in self.encoder.modules():
            if isinstance(module, MultiScaleDeformableAttention):
                module.reset_parameters()
        nn.init.normal_(self.level_embed)
        for projection in self.input_proj:
            nn.init.xavier_uniform_(projection[0].weight, gain=1)
            nn.init.zeros_(projection[0].bias)
        for conv in [*self.lateral_convs, *self.output_convs, self.mask_features]:
            weight_init.c2_xavier_fill(conv)

    def forward(self, features: dict[str, torch.Tensor]):
        sources, positions, level_shapes = [], [], []
        for level, (name, projection) in enumerate(zip(self.encoder_features, self.input_proj)):
            x = features[name].float()
            h, w = x.shape[-2:]
            level_shapes.append((h, w))
            sources.append(projection(x).flatten(2).transpose(1, 2))
            embedding = sine_position_embedding(h, w, self.conv_dim, x.device)
            positions.append(embedding.flatten(1).t() + self.level_embed[level])
        batch = sources[0].shape[0]
        encoded = torch.cat(sources, 1)
        position = torch.cat(positions, 0)[None]
        reference_points = _reference_points(level_shapes, batch, encoded.device)
        for layer in self.encoder:
            encoded = layer(encoded, position, reference_points, level_shapes)

        scales = [
            level.transpose(1, 2).reshape(batch, -1, h, w)
            for level, (h, w) in zip(encoded.split([h * w for h, w in level_shapes], 1),
                                     level_shapes)  # fmt: skip
        ]
        for name, lateral, output in zip(self.lateral_features, self.lateral_convs,
                                         self.output_convs):  # fmt: skip
            x = lateral(features[name].float())
            # Bilinear, as the official decoder (its comment says nearest, its code bilinear).
            upsampled = F.interpolate(scales[-1], size=x.shape[-2:], mode="bilinear",
                                      align_corners=False)  # fmt: skip
            scales.append(output(x + upsampled))
        return self.mask_features(scales[-1]), scales[:DECODER_SCALES]
