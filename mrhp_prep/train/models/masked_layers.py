"""Blocks over padded sequences with a mask (pooling, attention, transformer layers, the RoI
encoder), shared by the models: MCL and MM-SS build on all of them, SANCL on the attention.

Every block takes padded sequences with a boolean mask (True = a real position) and is safe
on rows whose mask is all False (an item without images, an empty text): attention over no
key gives a zero vector and pooling over no position gives a zero vector, never NaN.
Padding is assumed on the right (a mask is a prefix of True values), as the dataset pads.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn
from torch.nn import functional as F


# --------------------------------------------------------------------------- masking helpers


def zero_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x [B, L, D] with padded positions set to 0 (mask [B, L] bool)."""
    return x * mask.unsqueeze(-1).to(x.dtype)


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over positions: x [B, L, D], mask [B, L] -> [B, D]; an all-False row gives 0."""
    filled = x.masked_fill(~mask.unsqueeze(-1), float("-inf"))
    pooled = filled.max(dim=1).values
    has_any = mask.any(dim=1, keepdim=True)
    return torch.where(has_any, pooled, torch.zeros_like(pooled))


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over positions: x [B, L, D], mask [B, L] -> [B, D]; an all-False row gives 0."""
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def masked_soft_pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SoftPool over positions: per channel, sum_i softmax_i(x) * x_i over real positions.

    x [B, L, D], mask [B, L] -> [B, D]. The exponential weighting keeps strong activations
    (like max) while every position still gets a gradient (like mean). All-False row -> 0.
    """
    valid = mask.unsqueeze(-1)
    has_any = mask.any(dim=1)[:, None, None]
    logits = x.masked_fill(~valid, float("-inf"))
    logits = torch.where(has_any, logits, torch.zeros_like(x))
    weights = torch.softmax(logits, dim=1) * valid.to(x.dtype)
    return (weights * x).sum(dim=1)


# --------------------------------------------------------------------------- attention


class MaskedAttention(nn.Module):
    """Scaled dot-product attention of a query sequence over a context sequence.

    query [B, Lq, dim], context [B, Lk, context_dim], context_mask [B, Lk] -> [B, Lq, dim].
    Rows whose context has no real position get a zero output. With `output_projection=False`
    the heads are concatenated as they come out (softmax(Q K^T / sqrt(d_k)) V, nothing after).
    """

    def __init__(self, dim: int, heads: int = 1, context_dim: int | None = None,
                 dropout: float = 0.0, output_projection: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention size {dim} is not divisible by {heads} heads")
        context_dim = context_dim or dim
        self.heads = heads
        self.dropout = dropout
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(context_dim, dim)
        self.value = nn.Linear(context_dim, dim)
        self.output = nn.Linear(dim, dim) if output_projection else None

    def forward(self, query: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor) -> torch.Tensor:
        batch, query_len, dim = query.shape
        context_len = context.shape[1]
        head_dim = dim // self.heads

        def split(t: torch.Tensor, length: int) -> torch.Tensor:
            return t.view(batch, length, self.heads, head_dim).transpose(1, 2)

        q = split(self.query(query), query_len)
        k = split(self.key(context), context_len)
        v = split(self.value(context), context_len)
        has_key = context_mask.any(dim=1)
        # A row without keys attends to its padding (finite values) and is zeroed below.
        usable = context_mask | ~has_key[:, None]
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=usable[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(batch, query_len, dim)
        if self.output is not None:
            out = self.output(out)
        return out * has_key[:, None, None].to(out.dtype)


class TransformerLayer(nn.Module):
    """One post-norm transformer encoder layer (self-attention + feed-forward) with masks."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.1,
                 attention_dropout: float = 0.0):
        super().__init__()
        self.attention = MaskedAttention(dim, heads, dropout=attention_dropout)
        self.attention_norm = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(),
                                          nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.feed_forward_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, L, dim], mask [B, L] -> [B, L, dim] (padded positions zeroed)."""
        x = self.attention_norm(x + self.dropout(self.attention(x, x, mask)))
        x = self.feed_forward_norm(x + self.dropout(self.feed_forward(x)))
        return zero_padding(x, mask)


class SelfAttentionEncoder(nn.Module):
    """A stack of `TransformerLayer`s: [B, L, dim] -> [B, L, dim]."""

    def __init__(self, dim: int, layers: int, heads: int, ffn_dim: int, dropout: float = 0.1,
                 attention_dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(dim, heads, ffn_dim, dropout, attention_dropout)
            for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = zero_padding(x, mask)
        for layer in self.layers:
            x = layer(x, mask)
        return x


class PairSelfAttention(nn.Module):
    """Self-attention over the concatenation of two sequences (SelfAttn([X; Y]) in both papers).

    (x [B, Lx, dim], x_mask), (y [B, Ly, dim], y_mask) -> ([B, Lx + Ly, dim], [B, Lx + Ly]).
    """

    def __init__(self, dim: int, layers: int, heads: int, ffn_dim: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = SelfAttentionEncoder(dim, layers, heads, ffn_dim, dropout)

    def forward(self, x: torch.Tensor, x_mask: torch.Tensor, y: torch.Tensor,
                y_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        joint = torch.cat([x, y], dim=1)
        joint_mask = torch.cat([x_mask, y_mask], dim=1)
        return self.encoder(joint, joint_mask), joint_mask


# --------------------------------------------------------------------------- encoders


class RoiEncoder(nn.Module):
    """RoI features of an item's images -> self-attended hidden states.

    features [B, R, image_dim] (2048-d bottom-up-attention RoIs), mask [B, R] -> [B, R, dim].
    A linear projection to `dim`, then `layers` transformer layers (as MCR encodes RoIs).
    """

    def __init__(self, image_dim: int, dim: int, layers: int, heads: int, ffn_dim: int,
                 dropout: float, attention_dropout: float):
        super().__init__()
        self.projection = nn.Linear(image_dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.encoder = SelfAttentionEncoder(dim, layers, heads, ffn_dim, dropout, attention_dropout)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.dropout(self.projection(features.float())), mask)


def roi_encoder(inputs, dim: int, options) -> RoiEncoder | None:
    """The RoI encoder of one field from a model's `image_*` options; None for a text-only run
    (`inputs.image_dim` None)."""
    if inputs.image_dim is None:
        return None
    return RoiEncoder(int(inputs.image_dim), dim, options.image_layers, options.image_heads,
                      options.image_ffn_dim, options.image_dropout,
                      options.image_attention_dropout)


def encode_images(encoder: "RoiEncoder | None", batch: Mapping[str, torch.Tensor], field: str,
                  dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoded RoIs of `field` ([B, R, dim], mask [B, R]).

    A text-only run (no RoI store: no encoder, no image keys in the batch) gives one all-False
    position per row, so the model treats every item as having no image.
    """
    if encoder is None:
        rows, device = batch["label"].shape[0], batch["label"].device
        return (torch.zeros(rows, 1, dim, device=device),
                torch.zeros(rows, 1, dtype=torch.bool, device=device))
    mask = batch[f"{field}_image_mask"].bool()
    return encoder(batch[f"{field}_image"], mask), mask
