"""
Mask2Former's masked-attention transformer decoder: learnable queries, each layer masked
cross-attention (a query sees only the pixels its previous mask prediction holds at >= 0.5) ->
self-attention -> FFN, round-robin over the pixel decoder's three coarsest scales. A class and
a mask are predicted from the learnable queries and after every layer.
"""

from __future__ import annotations

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d
from torch import nn

from .pixel_decoder import DECODER_SCALES, sine_position_embedding

__all__ = ["MaskedAttentionDecoder"]


class _AttentionBlock(nn.Module):
    """Multi-head attention with a residual and LayerNorm (after, or before with ``pre_norm``)."""

    def __init__(self, dim: int, heads: int, pre_norm: bool):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.pre_norm = pre_norm

    def forward(self, queries, query_position, keys, key_position, values=None, mask=None):
        normed = self.norm(queries) if self.pre_norm else queries
        if values is None:  # self-attention reads the (normed) queries themselves
            keys, key_position, values = normed, query_position, normed
        attended = self.attention(normed + query_position, keys + key_position, values,
                                  attn_mask=mask, need_weights=False)[0]  # fmt: skip
        queries = queries + attended
        return queries if self.pre_norm else self.norm(queries)


class _FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, pre_norm: bool):
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden_dim)
        self.linear2 = nn.Linear(hidden_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.pre_norm = pre_norm

    def forward(self, x):
        hidden = self.linear2(F.relu(self.linear1(self.norm(x) if self.pre_norm else x)))
        return x + hidden if self.pre_norm else self.norm(x + hidden)


class _MaskEmbedding(nn.Module):
    """Three linear layers with ReLUs between them: query -> mask embedding."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.layers = nn.ModuleList(
            [nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, out_dim)]
        )

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


class MaskedAttentionDecoder(nn.Module):
    """
    ``forward(scales, mask_features)`` -> (class logits, mask logits) per prediction: lists of
    (N, Q, classes + 1) and (N, Q, H/4, W/4), the learnable queries' prediction first, the last
    layer's last. ``all_predictions=False`` returns the last one only (inference).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        heads: int,
        ffn_dim: int,
        layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_projection: bool,
    ):
        super().__init__()
        self.heads = heads
        self.hidden_dim = hidden_dim
        self.cross_attention = nn.ModuleList(
            _AttentionBlock(hidden_dim, heads, pre_norm) for _ in range(layers)
        )
        self.self_attention = nn.ModuleList(
            _AttentionBlock(hidden_dim, heads, pre_norm) for _ in range(layers)
        )
        self.ffn = nn.ModuleList(_FeedForward(hidden_dim, ffn_dim, pre_norm) for _ in range(layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(DECODER_SCALES, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(DECODER_SCALES):
            if in_channels != hidden_dim or enforce_input_projection:
                projection = Conv2d(in_channels, hidden_dim, kernel_size=1)
                weight_init.c2_xavier_fill(projection)
            else:
                projection = nn.Identity()
            self.input_proj.append(projection)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = _MaskEmbedding(hidden_dim, mask_dim)
        # The official initialisation: Xavier for every matrix of the attention and FFN layers.
        for parameter in [*self.cross_attention.parameters(), *self.self_attention.parameters(),
                          *self.ffn.parameters()]:  # fmt: skip
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)

    def forward(self, scales: list[torch.Tensor], mask_features: torch.Tensor,
                all_predictions: bool = True):  # fmt: skip
        if len(scales) != DECODER_SCALES:
            raise ValueError(f"the decoder reads {DECODER_SCALES} scales, got {len(scales)}")
        batch = mask_features.shape[0]
        sources, positions, sizes = [], [], []
        for level, (scale, projection) in enumerate(zip(scales, self.input_proj)):
            h, w = scale.shape[-2:]
            sizes.append((h, w))
            embedding = sine_position_embedding(h, w, self.hidden_dim, scale.device)
            positions.append(embedding.flatten(1).t()[None])
            source = projection(scale).flatten(2) + self.level_embed.weight[level][None, :, None]
            sources.append(source.transpose(1, 2))
        query_position = self.query_embed.weight[None].expand(batch, -1, -1)
        queries = self.query_feat.weight[None].expand(batch, -1, -1)

        class_logits, mask_logits, attention_mask = self._predict(queries, mask_features, sizes[0])
        predictions = [(class_logits, mask_logits)]
        for i, (cross, self_attention, ffn) in enumerate(
            zip(self.cross_attention, self.self_attention, self.ffn)
        ):
            level = i % DECODER_SCALES
            # A query whose mask is empty at this scale attends everywhere instead.
            attention_mask = attention_mask & ~attention_mask.all(-1, keepdim=True)
            queries = cross(queries, query_position, sources[level], positions[level],
                            sources[level], attention_mask)  # fmt: skip
            queries = self_attention(queries, query_position, None, None)
            queries = ffn(queries)
            class_logits, mask_logits, attention_mask = self._predict(
                queries, mask_features, sizes[(i + 1) % DECODER_SCALES]
            )
            predictions.append((class_logits, mask_logits))
        if not all_predictions:
            predictions = predictions[-1:]
        return [c for c, _ in predictions], [m for _, m in predictions]

    def _predict(self, queries, mask_features, attention_size):
        """Class and mask logits of the queries, and the next cross-attention's mask
        (N * heads, Q, h * w), True where a query may not look."""
        normed = self.decoder_norm(queries)
        class_logits = self.class_embed(normed)
        mask_logits = torch.einsum("bqc,bchw->bqhw", self.mask_embed(normed), mask_features)
        resized = F.interpolate(mask_logits, size=attention_size, mode="bilinear",
                                align_corners=False)  # fmt: skip
        # sigmoid(x) < 0.5 written as x < 0 would differ only where sigmoid rounds to 0.5.
        blocked = resized.sigmoid().flatten(2) < 0.5
        blocked = blocked[:, None].expand(-1, self.heads, -1, -1).flatten(0, 1)
        return class_logits, mask_logits, blocked.detach()
