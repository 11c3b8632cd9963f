"""Building blocks shared by the ranking models: text encoders, masked attention and pooling."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ...errors import InputError
from .base import ModelInputs


class TokenInput(nn.Module):
    """Token vectors of one text field (product or review), whichever form the run's text has.

    "static" mode: token ids [B, L] (0 = padding) looked up in the field's vectors [V, Dt];
    "features" mode: frozen transformer features [B, L, Dt] pass through; "ids" mode:
    transformer ids [B, L] run through the field's `text_encoder.FineTunedEncoder` (which
    needs the mask [B, L]). Output [B, L, Dt] float32 after dropout; `dim` is Dt.
    """

    def __init__(self, inputs: ModelInputs, field: str, dropout: float, freeze: bool):
        super().__init__()
        self.static = inputs.text_mode == "static"
        if self.static:
            vectors = inputs.product_vectors if field == "product" else inputs.review_vectors
            # A copy: the store's vectors may be a read-only memory map, and fine-tuning
            # writes into the table.
            table = torch.from_numpy(np.array(vectors, dtype=np.float32, copy=True))
            self.embedding = nn.Embedding.from_pretrained(table, freeze=freeze, padding_idx=0)
        self.encoder = inputs.text_encoders[field] if inputs.text_mode == "ids" else None
        self.dropout = nn.Dropout(dropout)
        self.dim = int(inputs.text_dim)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.encoder is not None:
            x = self.encoder(tokens, mask)
        else:
            x = self.embedding(tokens) if self.static else tokens.float()
        return self.dropout(x)


def require_text(inputs: ModelInputs, model: str) -> None:
    """Every model reads product and review text: refuse a run without a text store."""
    if inputs.text_mode not in {"static", "features", "ids"}:
        raise InputError(f"{model} reads product and review text: pass --text (an embed-text "
                         "output in static, features or ids mode)", field="text")


class GRUEncoder(nn.Module):
    """A uni-directional GRU over the real tokens: states [B, L, H] (0 at padding) and the
    sequence state [B, H] (the state after the last real token)."""

    def __init__(self, input_dim: int, hidden: int):
        super().__init__()
        self.gru = nn.GRU(input_dim, hidden, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = mask.sum(dim=1).clamp(min=1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        states, last = self.gru(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=x.shape[1])
        return states * mask[..., None].to(states.dtype), last[-1]


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over positions where `mask` is True; all-False rows give zeros, not NaN."""
    scores = scores.float().masked_fill(~mask, -1e9)
    return torch.softmax(scores, dim=dim) * mask.float()


class SelfAttention(nn.Module):
    """H + A'H with A = softmax(q(H) k(H)^T / sqrt(d)) over the real keys (without the
    1 / sqrt(d) when `scaled` is False).

    With token weights m' [B, L], A' = (m'^T m') ⊙ A re-weights every pair (i, j) by
    m'_i m'_j (SANCL's selective attention); without, A' = A.
    """

    def __init__(self, dim: int, scaled: bool = True):
        super().__init__()
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.scale = dim ** -0.5 if scaled else 1.0

    def forward(self, h: torch.Tensor, mask: torch.Tensor,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        scores = self.query(h) @ self.key(h).transpose(1, 2) * self.scale     # [B, L, L]
        attention = masked_softmax(scores, mask[:, None, :], dim=-1)
        if weights is not None:
            attention = attention * (weights[:, :, None] * weights[:, None, :])
        out = h + attention.to(h.dtype) @ h
        return out * mask[..., None].to(out.dtype)


def weighted_mean(h: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[B, L, D] pooled with token weights [B, L] (0 at padding): sum(w h) / sum(w)."""
    weights = weights.to(h.dtype)
    total = weights.sum(dim=1, keepdim=True).clamp(min=1e-6)
    return (h * weights[..., None]).sum(dim=1) / total
