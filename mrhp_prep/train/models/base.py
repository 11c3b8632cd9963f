"""What every ranking model takes and returns.

A batch is a dict of tensors for B review rows (each row a review with its product):

    product_text       LongTensor [B, Lp] token ids, or FloatTensor [B, Lp, Dt] frozen features
    product_text_mask  BoolTensor [B, Lp]  True = a real token
    review_text        LongTensor [B, Lr] or FloatTensor [B, Lr, Dt]
    review_text_mask   BoolTensor [B, Lr]
    product_image      FloatTensor [B, Rp, Dv] RoI features (Dv = 2048 for the BUTD model)
    product_image_mask BoolTensor [B, Rp]  all False when the product has no image
    review_image       FloatTensor [B, Rr, Dv]
    review_image_mask  BoolTensor [B, Rr]
    review_probe       FloatTensor [B, Lr]  1 = token inside a probe-marked sentence, else 0
    label              FloatTensor [B]      helpfulness label
    product_index      LongTensor [B]       rows with the same value share a product
    review_index       LongTensor [B]       the review's row in its split (stable across epochs)

A model returns a `ModelOutput`: one score per row (higher = more helpful) and an auxiliary
loss (0 when the model has none), which the trainer adds to the ranking loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

Batch = Mapping[str, torch.Tensor]


@dataclass
class ModelOutput:
    score: torch.Tensor                       # [B]
    aux_loss: torch.Tensor | None = None      # scalar; None = no auxiliary objective
    logs: dict[str, float] = field(default_factory=dict)  # scalars worth plotting


class RankingModel(nn.Module):
    """Base class: subclasses implement `forward(batch) -> ModelOutput`.

    `on_epoch_end(epoch)` is called by the trainer after each training epoch (MM-SS updates
    its pseudo labels there).
    """

    def forward(self, batch: Batch) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_epoch_end(self, epoch: int) -> None:
        return None

    def num_parameters(self, exclude_embeddings: bool = True) -> int:
        """Trainable parameters; word-embedding tables are left out by default (as the papers count)."""
        skip = set()
        if exclude_embeddings:
            skip = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        return sum(p.numel() for p in self.parameters() if p.requires_grad and id(p) not in skip)
