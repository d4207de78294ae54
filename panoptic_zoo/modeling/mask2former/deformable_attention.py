"""
Multi-scale deformable attention (Zhu et al., Deformable DETR, 2021) in pure PyTorch: each query
reads a few bilinearly sampled points per head and level around its reference point, weighted
by a softmax over all of its points. ``F.grid_sample`` does the sampling, so it runs on the CPU
and the GPU alike without a compiled op.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from detectron2.layers.wrappers import shapes_to_tensor
from torch import nn

__all__ = ["MultiScaleDeformableAttention", "multi_scale_deformable_attention"]


def multi_scale_deformable_attention(
    value: torch.Tensor,
    level_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """
    Args:
        value: (N, sum(h_l * w_l), heads, head_dim), the levels flattened one after the other.
        level_shapes: (h_l, w_l) of each level.
        sampling_locations: (N, queries, heads, levels, points, 2) as (x, y) in [0, 1] of the
            level (pixel centres at (i + 0.5) / size; outside reads zeros).
        attention_weights: (N, queries, heads, levels, points), summing to 1 per query and head.

    Returns:
        (N, queries, heads * head_dim).
    """
    batch, _, heads, head_dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    per_level = value.split([h * w for h, w in level_shapes], dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample's [-1, 1], align_corners=False
    sampled = []
    for level, (h, w) in enumerate(level_shapes):
        # (N, h*w, heads, d) -> (N*heads, d, h, w); grid (N*heads, queries, points, 2)
        level_value = per_level[level].permute(0, 2, 3, 1).reshape(batch * heads, head_dim, h, w)
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled.append(
            F.grid_sample(level_value, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)  # fmt: skip
        )
    # (N*heads, d, queries, levels*points) weighted over its last axis
    sampled = torch.stack(sampled, dim=-2).flatten(-2)
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels * points)
    output = (sampled * weights).sum(-1).view(batch, heads * head_dim, queries)
    return output.transpose(1, 2).contiguous()


class MultiScaleDeformableAttention(nn.Module):
    """Queries (N, Q, C) attend to flattened multi-level features (N, sum(h_l w_l), C)."""

    def __init__(self, dim: int, levels: int, heads: int, points: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"deformable attention: dim {dim} is not divisible by {heads} heads")
        self.dim, self.levels, self.heads, self.points = dim, levels, heads, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Offsets start as rings: head k points at angle 2 pi k / heads, point p at p+1 cells
        # (on the square's border), the same on every level; uniform attention.
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.heads, dtype=torch.float32) * (2 * math.pi / self.heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        steps = torch.arange(1, self.points + 1, dtype=torch.float32)
        rings = directions[:, None, None, :] * steps[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(
                rings.expand(self.heads, self.levels, self.points, 2).flatten()
            )
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for projection in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(projection.weight)
            nn.init.zeros_(projection.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        features: torch.Tensor,
        level_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """``reference_points``: (N, Q, levels, 2) as (x, y) in [0, 1] of each level."""
        batch, queries, _ = query.shape
        value = self.value_proj(features).view(batch, features.shape[1], self.heads, -1)
        offsets = self.sampling_offsets(query).view(
            batch, queries, self.heads, self.levels, self.points, 2
        )
        weights = self.attention_weights(query).view(
            batch, queries, self.heads, self.levels * self.points
        )
        weights = weights.softmax(-1).view(batch, queries, self.heads, self.levels, self.points)
        # Offsets are in cells of each level: divided by its (w, h), traced from the input's
        # shape (an exported network takes other sizes).
        sizes = torch.stack([shapes_to_tensor([w, h], query.device) for h, w in level_shapes])
        sizes = sizes.to(query.dtype)
        locations = (
            reference_points[:, :, None, :, None, :] + offsets / sizes[None, None, None, :, None, :]
        )
        output = multi_scale_deformable_attention(value, level_shapes, locations, weights)
        return self.output_proj(output)
