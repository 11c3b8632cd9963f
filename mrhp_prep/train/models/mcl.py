"""MCL: multimodal contrastive learning with a multimodal interaction module.

The model of "Adaptive Contrastive Learning on Multimodal Transformer for Review Helpfulness
Prediction" (Nguyen et al., EMNLP 2022), section numbers and equations below refer to it:

1. Encoding (2.2): product and review text through their own 1-layer LSTM (hidden 128) over
   static word vectors or frozen transformer features -> K^p [B, Lp, d], K^r [B, Lr, d];
   RoI features projected to d and self-attended -> A^p [B, Rp, d], A^r [B, Rr, d].
2. Multimodal interaction (2.3, eq. 5-14): for each of the four sequences, D = 5 blocks of
   cross-modal attention against the concatenation of the other three:
   T = CM(LN(Q[i-1]), LN(X_eta)), U = T + Q[i-1], Q[i] = GELU(Linear(U)).
   Equation 10 prints LN(X_gamma) as the attended sequence; the text (eq. 6-8) defines the keys
   and values from X_eta, the other three modalities, so that is what we attend to.
3. Fusion (eq. 15-29): intra-modal (SelfAttn over [H^p; H^r] and [V^p; V^r], the two joined
   along the sequence, a 1-D CNN and max-pool), inter-modal (SelfAttn([H^p; V^r]),
   SelfAttn([V^p; H^r]), mean-pool) and intra-review (SelfAttn([H^p; V^p]), SelfAttn([H^r; V^r]),
   mean-pool); concatenation [5d] -> Linear -> score.
4. Adaptive contrastive loss (3.1, eq. 30-33) over the max-pooled h^p, h^r, v^p, v^r of the
   helpful rows of a batch; it is the model's `aux_loss`, which the trainer adds to the pairwise
   ranking loss (eq. 35).

Choices where the paper is silent (all options of `MclOptions`):
- the contrastive pairs are the six pairs of distinct modalities among {h^p, h^r, v^p, v^r};
  a term involving an image is left out for a row without images; the negatives are every
  pair of two distinct rows of the batch (eq. 32's j != k, "modalities of distinct ones"),
  rows of the same product included, as the released code has it; "helpful" rows are those
  with label > `relevance_threshold` (the dataset's relevance threshold: 1 on Amazon-MRHP, 0
  on Lazada-MRHP; null = every row);
- sim is the cosine similarity, sums as in eq. 33 (not means), the weights epsilon are not
  detached, so the loss equals its hyperspherical form (Theorem 1) in value and in gradient;
- SelfAttn is one post-norm transformer layer (4 heads, feed-forward 512); the RoI encoder has
  3 such layers with MCR's dropouts (0.5, attention 0.3), the cross-modal attention one head
  as equation 8 writes it.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ..settings.model_settings import ENCODER_KEYS
from ..settings.typed_sections import section_fields
from .base import Batch, ModelOutput, RankingModel, relevance_threshold
from .layers import TokenInput, require_text
from .masked_layers import (MaskedAttention, PairSelfAttention, encode_images, masked_max,
                              masked_mean, roi_encoder, zero_padding)


class MclOptions(section_fields("model", "mcl", exclude=ENCODER_KEYS,
                                defaults={"relevance_threshold": 1.0})):
    """MCL hyperparameters: the `model:` settings declared in `settings/model_settings.py`
    (defaults the paper's, section 4.2, where it gives them; docs/settings.md), the text
    encoder's keys left to `text_encoder.py`. Built without a config, `relevance_threshold`
    is Amazon's 1.0; `auto` is the dataset's (`base.relevance_threshold`); None = every row."""


# --------------------------------------------------------------------------- the loss


def adaptive_contrastive_loss(positive_sim: torch.Tensor, negative_sim: torch.Tensor,
                              positive_optimum: float = 2.0, negative_optimum: float = 0.0,
                              adaptive: bool = True) -> torch.Tensor:
    """Equation 33 (adaptive) or 32 (plain) from the similarities of the pairs.

    positive_sim [P]: sim(t1_i, t2_i) of the positive pairs; negative_sim [N]: sim(t1_j, t2_k),
    j != k. Adaptive: -sum eps^p * sim_pos + sum eps^n * sim_neg with eps^p = [o^p - sim]_+,
    eps^n = [sim - o^n]_+ (weights not detached). Plain: -sum sim_pos + sum sim_neg.
    """
    if not adaptive:
        return negative_sim.sum() - positive_sim.sum()
    positive_weight = (positive_optimum - positive_sim).clamp_min(0.0)
    negative_weight = (negative_sim - negative_optimum).clamp_min(0.0)
    return (negative_weight * negative_sim).sum() - (positive_weight * positive_sim).sum()


def hyperspherical_contrastive_loss(positive_sim: torch.Tensor, negative_sim: torch.Tensor,
                                    positive_optimum: float = 2.0,
                                    negative_optimum: float = 0.0) -> tuple[torch.Tensor, float]:
    """Theorem 1's form: sum (sim_pos - o^p/2)^2 + sum (sim_neg - o^n/2)^2 - C; returns (loss, C).

    C = P (o^p/2)^2 + N (o^n/2)^2 for P positive and N negative terms (the appendix writes
    C = (o^p/2)^2 + (o^n/2)^2 per pair of terms). Equal to the adaptive loss while no weight
    is clipped, i.e. sim_pos <= o^p and sim_neg >= o^n.
    """
    constant = (positive_sim.numel() * (positive_optimum / 2) ** 2
                + negative_sim.numel() * (negative_optimum / 2) ** 2)
    loss = ((positive_sim - positive_optimum / 2) ** 2).sum() \
        + ((negative_sim - negative_optimum / 2) ** 2).sum() - constant
    return loss, constant


def contrastive_pair_similarities(first: torch.Tensor, first_present: torch.Tensor,
                                  second: torch.Tensor, second_present: torch.Tensor
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities of positive and negative pairs between two modality vectors.

    first, second [B, d]; *_present [B] bool (the row has that modality). Positive:
    (first_i, second_i) for rows with both. Negative: (first_j, second_k) for every j != k with
    both present, two rows of one product included (eq. 32 and the released code).
    Returns (positive [P], negative [N]).
    """
    first = nn.functional.normalize(first, dim=-1)
    second = nn.functional.normalize(second, dim=-1)
    sim = first @ second.T                                            # [B, B]
    both = first_present & second_present
    positive = sim.diagonal()[both]
    distinct = ~torch.eye(len(sim), dtype=torch.bool, device=sim.device)
    negative_mask = distinct & first_present[:, None] & second_present[None, :]
    return positive, sim[negative_mask]


# --------------------------------------------------------------------------- the modules


class CrossModalBlock(nn.Module):
    """One layer of equations 10-12 for one target modality.

    query [B, Lq, d] (Q[i-1]), context [B, Lc, d] (X_eta, fixed over layers), context_mask.
    """

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.query_norm = nn.LayerNorm(dim)
        self.context_norm = nn.LayerNorm(dim)
        self.attention = MaskedAttention(dim, heads, dropout=dropout, output_projection=False)
        self.linear = nn.Linear(dim, dim)
        self.activation = nn.GELU()

    def forward(self, query: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor) -> torch.Tensor:
        attended = self.attention(self.query_norm(query), self.context_norm(context), context_mask)
        return self.activation(self.linear(attended + query))


class MultimodalInteraction(nn.Module):
    """Section 2.3: D cross-modal blocks for each of [K^p, A^p, K^r, A^r] (eq. 9-14)."""

    def __init__(self, dim: int, layers: int, heads: int, dropout: float, modalities: int = 4):
        super().__init__()
        self.stacks = nn.ModuleList(
            nn.ModuleList(CrossModalBlock(dim, heads, dropout) for _ in range(layers))
            for _ in range(modalities))

    def forward(self, sequences: list[torch.Tensor],
                masks: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = []
        for target, stack in enumerate(self.stacks):
            others = [i for i in range(len(sequences)) if i != target]
            context = torch.cat([sequences[i] for i in others], dim=1)
            context_mask = torch.cat([masks[i] for i in others], dim=1)
            state = sequences[target]
            for block in stack:
                state = block(state, context, context_mask)
            outputs.append(zero_padding(state, masks[target]))
        return outputs


class MclModel(RankingModel):
    """MCL ranking model. `forward(batch) -> ModelOutput(score [B], aux_loss = contrastive)`.

    Built as `MclModel(config, inputs)`: `config` the `model:` section (MclOptions fields),
    `inputs` the run's ModelInputs (text_mode "static" or "features", text_dim, the static
    vectors, image_dim or None for a text-only run, whose items all count as without image).
    """

    def __init__(self, config: Mapping | None, inputs):
        super().__init__()
        require_text(inputs, "MCL")
        self.options = options = MclOptions.from_config(config)
        self.relevance_threshold = relevance_threshold(options.relevance_threshold, inputs,
                                                       none_allowed=True)
        d = options.hidden_dim
        self.product_tokens = TokenInput(inputs, "product", options.embedding_dropout,
                                         options.freeze_embeddings)
        self.review_tokens = TokenInput(inputs, "review", options.embedding_dropout,
                                        options.freeze_embeddings)
        self.product_lstm = nn.LSTM(self.product_tokens.dim, d, num_layers=1, batch_first=True)
        self.review_lstm = nn.LSTM(self.review_tokens.dim, d, num_layers=1, batch_first=True)

        self.product_image_encoder = roi_encoder(inputs, d, options)
        self.review_image_encoder = roi_encoder(inputs, d, options)
        self.interaction = (MultimodalInteraction(d, options.interaction_layers,
                                                  options.interaction_heads, options.dropout)
                            if options.cross_modal_interaction else None)

        def fusion() -> PairSelfAttention:
            return PairSelfAttention(d, options.fusion_layers, options.fusion_heads,
                                     options.fusion_ffn_dim, options.dropout)

        self.intra_modal_text = fusion()
        self.intra_modal_image = fusion()
        self.intra_modal_cnn = nn.Conv1d(d, d, options.fusion_cnn_kernel,
                                         padding=options.fusion_cnn_kernel // 2)
        self.inter_modal_text_image = fusion()   # [H^p; V^r]
        self.inter_modal_image_text = fusion()   # [V^p; H^r]
        self.intra_review_product = fusion()     # [H^p; V^p]
        self.intra_review_review = fusion()      # [H^r; V^r]
        self.dropout = nn.Dropout(options.dropout)
        self.scorer = nn.Linear(5 * d, 1)

    def encode(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The cross-modal features H^p, V^p, H^r, V^r [B, L*, d] and their masks."""
        d = self.options.hidden_dim
        product_mask = batch["product_text_mask"].bool()
        review_mask = batch["review_text_mask"].bool()
        product_text, _ = self.product_lstm(self.product_tokens(batch["product_text"],
                                                                product_mask))
        review_text, _ = self.review_lstm(self.review_tokens(batch["review_text"], review_mask))
        product_image, product_image_mask = encode_images(self.product_image_encoder, batch,
                                                          "product", d)
        review_image, review_image_mask = encode_images(self.review_image_encoder, batch,
                                                        "review", d)
        sequences = [zero_padding(product_text, product_mask), product_image,
                     zero_padding(review_text, review_mask), review_image]
        masks = [product_mask, product_image_mask, review_mask, review_image_mask]
        if self.interaction is not None:
            sequences = self.interaction(sequences, masks)
        names = ("product_text", "product_image", "review_text", "review_image")
        out = {name: seq for name, seq in zip(names, sequences)}
        out.update({f"{name}_mask": mask for name, mask in zip(names, masks)})
        return out

    def fuse(self, f: dict[str, torch.Tensor]) -> torch.Tensor:
        """Equations 15-29: z_final [B, 5d]."""
        hp, hpm = f["product_text"], f["product_text_mask"]
        vp, vpm = f["product_image"], f["product_image_mask"]
        hr, hrm = f["review_text"], f["review_text_mask"]
        vr, vrm = f["review_image"], f["review_image_mask"]
        text, text_mask = self.intra_modal_text(hp, hpm, hr, hrm)
        image, image_mask = self.intra_modal_image(vp, vpm, vr, vrm)
        joint = torch.cat([text, image], dim=1)
        joint_mask = torch.cat([text_mask, image_mask], dim=1)
        convolved = torch.relu(
            self.intra_modal_cnn(zero_padding(joint, joint_mask).transpose(1, 2)))
        z_intra_modal = masked_max(convolved.transpose(1, 2), joint_mask)
        z_inter_modal = torch.cat([masked_mean(*self.inter_modal_text_image(hp, hpm, vr, vrm)),
                                   masked_mean(*self.inter_modal_image_text(vp, vpm, hr, hrm))], -1)
        z_intra_review = torch.cat([masked_mean(*self.intra_review_product(hp, hpm, vp, vpm)),
                                    masked_mean(*self.intra_review_review(hr, hrm, vr, vrm))], -1)
        return torch.cat([z_intra_modal, z_inter_modal, z_intra_review], dim=-1)

    def contrastive_loss(self, f: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        """Equation 33 (or 32) summed over the six modality pairs of the helpful rows."""
        options = self.options
        rows = torch.ones_like(batch["label"], dtype=torch.bool)
        if self.relevance_threshold is not None:
            rows = batch["label"] > self.relevance_threshold
        names = ("product_text", "review_text", "product_image", "review_image")
        pooled = {n: masked_max(f[n][rows], f[f"{n}_mask"][rows]) for n in names}
        present = {n: f[f"{n}_mask"][rows].any(dim=1) for n in names}
        total = f["product_text"].new_zeros(())
        for i, first in enumerate(names):
            for second in names[i + 1:]:
                positive, negative = contrastive_pair_similarities(
                    pooled[first], present[first], pooled[second], present[second])
                total = total + adaptive_contrastive_loss(
                    positive, negative, options.positive_optimum, options.negative_optimum,
                    options.adaptive_weighting)
        return options.contrastive_weight * total

    def forward(self, batch: Batch) -> ModelOutput:
        features = self.encode(batch)
        score = self.scorer(self.dropout(self.fuse(features))).squeeze(-1)
        if not self.options.contrastive:
            return ModelOutput(score=score)
        aux = self.contrastive_loss(features, batch)
        return ModelOutput(score=score, aux_loss=aux,
                           logs={"contrastive_loss": aux.detach()})
