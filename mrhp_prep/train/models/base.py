"""What every ranking model takes and returns.

A batch is a dict of tensors for B review rows (each row a review with its product):

    product_text       LongTensor [B, Lp] token ids (static vectors or a transformer trained in
                       the model), or FloatTensor [B, Lp, Dt] frozen features
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

Keys of an input the run was not given are absent: a text-only run (no RoI store) has no
`*_image*` keys, a run without probe masks has no `review_probe`. Images are at most 32 RoIs
per image, an item's images concatenated, padded per batch to between 16 and 128 rows; padding
rows are zeros with mask False. Text ids use 0 for padding (and 1 for unknown words).
Features reach the model as float32 on its device (`trainer.to_device` widens the float16
that the loader keeps them in).

The trainer lays training batches out in groups: rows [g * G, (g + 1) * G) are one group, the
first row its positive, the other G - 1 rows its negatives (G = 1 + sampling.negatives). Models
may use that (nothing requires it); evaluation batches are plain lists of reviews.

A model is built from its config section and a `ModelInputs` (what the cached features
provide: text mode and widths, the static vectors, the RoI feature width, whether probe masks
exist), as `ModelClass(config: dict, inputs: ModelInputs)`; see `models/__init__.py`.

A model returns a `ModelOutput`: one score per row (higher = more helpful) and an auxiliary
loss (0 when the model has none), which the trainer adds to the ranking loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch
from torch import nn

from ...errors import InputError

Batch = Mapping[str, torch.Tensor]


@dataclass
class ModelInputs:
    """What the cached features give a model to be built on.

    text_mode        "static" (token ids into `*_vectors`), "features" (frozen transformer
                     features in the batch) or None (no text store)
    text_dim         Dt: width of the static vectors or of the frozen features
    product_vectors  [Vp, Dt] float32 static vectors of the product vocabulary (row 0 = <pad>,
                     1 = <unk>); None unless text_mode == "static"
    review_vectors   [Vr, Dt] float32, the same for the review vocabulary
    image_dim        Dv: width of the RoI features; None for a text-only run
    has_probes       True when the batch carries `review_probe`
    text_model       the transformer an ids store was tokenized for (local folder or hub name)
    text_encoders    "ids" mode: {"product", "review"} -> the text_encoder.FineTunedEncoder
                     each field runs (one module twice with model.shared_encoder)
    relevance_threshold  the dataset's relevance threshold (the manifest's: 1 Amazon-MRHP, 0
                     Lazada-MRHP), what `model.relevance_threshold: auto` means; None when
                     the inputs come from no manifest
    """

    text_mode: str | None
    text_dim: int
    product_vectors: np.ndarray | None = None
    review_vectors: np.ndarray | None = None
    image_dim: int | None = None
    has_probes: bool = False
    text_model: str | None = None
    text_encoders: dict | None = None
    relevance_threshold: float | None = None


def relevance_threshold(value: float | str | None, inputs: ModelInputs, *,
                        none_allowed: bool = False) -> float | None:
    """`model.relevance_threshold` as the number a model compares labels with. A run's config
    holds a number (`resolve_config` resolves `auto` from the manifest); a model built from
    unresolved settings resolves `auto` here with the dataset's threshold in `inputs`, and
    without one refuses it naming the key. None (every row helpful) only where
    `none_allowed`."""
    if value is None and none_allowed:
        return None
    if value == "auto" and inputs.relevance_threshold is not None:
        return float(inputs.relevance_threshold)
    if value is None or isinstance(value, str):
        raise InputError(
            f"relevance_threshold must be a number, got {value!r}: 'auto' is the dataset's "
            f"threshold and these inputs come from no manifest", field="model.relevance_threshold",
            hint="set a number (1 for Amazon-MRHP, 0 for Lazada-MRHP), or build the model from "
                 "a resolved training config or from a manifest's stores")
    return float(value)


@dataclass
class ModelOutput:
    score: torch.Tensor                       # [B]
    aux_loss: torch.Tensor | None = None      # scalar; None = no auxiliary objective
    # scalars worth plotting, as 0-d detached tensors: the trainer reads them from the device
    # once per step, after its loss check (a float() here would wait for the device mid-step)
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


class RankingModel(nn.Module):
    """Base class: subclasses implement `forward(batch) -> ModelOutput`.

    `on_epoch_end(epoch)` is called by the trainer after each training epoch (MM-SS updates
    its pseudo labels there).

    `find_unused_parameters` is handed to DDP under torchrun: keep True when some parameters
    can miss a step's autograd graph (a branch skipped for a batch); a model whose every
    parameter takes part in every forward sets it False, which saves a graph traversal.
    """

    find_unused_parameters: bool = True

    def forward(self, batch: Batch) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_epoch_end(self, epoch: int) -> None:
        return None

    def num_parameters(self, exclude_embeddings: bool = True) -> int:
        """Trainable parameters; word-embedding tables are left out by default (as the papers
        count)."""
        skip = set()
        if exclude_embeddings:
            skip = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        return sum(p.numel() for p in self.parameters() if p.requires_grad and id(p) not in skip)
