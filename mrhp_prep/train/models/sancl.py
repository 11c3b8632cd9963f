"""SANCL: probe-based selective attention and multi-domain natural contrastive learning.

From the paper (Han et al., 2022), per review row with its product:

1. Text: token vectors (static GloVe-like vectors or frozen BERT features, dropout) run through
   a uni-directional GRU per field: token states H [L, h] and a sequence state h_seq.
2. Selective attention on the review text: the probe mask M (1 = token in a sentence that
   mentions the product) becomes M' = αM + β(1 - M), α = 1, β = sigmoid(W h_seq + b)
   learned per review (or fixed); self-attention A is re-weighted A' = M'^T M' ⊙ A and added
   back: H' = H + A'H. The product text gets plain self-attention.
3. Cross-field attention: review tokens gather the product's tokens (H'' = H' + attention
   over product tokens); the review is pooled with M' as weights, the product by its mean.
4. Images: RoI features projected to the image width, self-attention, average pooling over
   the real RoIs; an item without images gets a learned "no image" vector instead.
5. Every pooled vector is projected into two shared spaces (inner-instance "ii" and
   product-review "pr"), one two-layer tanh network per (domain, modality), shared by the
   product and review fields. The score is a linear layer over the review's four projections
   [S^ii_t, S^pr_t, S^ii_v, S^pr_v] (text-only runs: the two text ones).
6. Auxiliary loss κ (cpc_ii + cpc^t_pr + cpc^v_pr), each an InfoNCE over the batch with
   φ(a, b) = exp(cos(a, b) / τ): in ii, an instance's text against its own image (products
   and helpful reviews are positives, unhelpful reviews negatives); in pr, a review against
   its product's projection of the same modality (helpful reviews positive). "Helpful" is
   label > relevance_threshold. Each term sums -log share over its positives, as eq. 11-12
   write it (`contrastive_reduction: sum`); `mean` averages over the positives instead, which
   divides κ by the batch's number of positives (at least 4 with MCR's groups of 8).

Config (`model:` section, defaults in configs/sancl.yaml): text_hidden, image_hidden,
shared_hidden, embedding_dropout, freeze_embeddings, kappa, temperature,
probe_beta ("learned" or a number), relevance_threshold, contrastive_reduction.

Size: 1,413,122 trainable parameters on 768-d BERT features with images and probes (the
paper's "1.41M excluding the embedding layer" is this configuration, Table 6); 1,053,698 on
300-d GloVe vectors (Table 5), whose GRUs are smaller. See docs/models.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from .base import Batch, ModelInputs, ModelOutput, RankingModel
from .layers import (GRUEncoder, SelfAttention, TokenInput, masked_softmax, require_text,
                     weighted_mean)


class CrossFieldAttention(nn.Module):
    """Review tokens attend over product tokens: H'' = H' + softmax_p(relu(Hp W + b) H'^T)^T Hp."""

    def __init__(self, dim: int):
        super().__init__()
        self.transform = nn.Linear(dim, dim)

    def forward(self, product: torch.Tensor, product_mask: torch.Tensor, review: torch.Tensor,
                review_mask: torch.Tensor) -> torch.Tensor:
        keys = torch.relu(self.transform(product))                       # [B, Lp, h]
        scores = keys @ review.transpose(1, 2)                            # [B, Lp, Lr]
        attention = masked_softmax(scores, product_mask[:, :, None], dim=1)
        gathered = attention.transpose(1, 2).to(product.dtype) @ product  # [B, Lr, h]
        out = review + gathered
        return out * review_mask[..., None].to(out.dtype)


class ImageEncoder(nn.Module):
    """RoI features [B, R, Dv] -> [B, d]: projection, self-attention, mean over real RoIs.

    Rows whose mask is all False (no image) get the learned `missing` vector instead.
    """

    def __init__(self, feature_dim: int, dim: int):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(feature_dim, dim), nn.ReLU())
        self.attention = SelfAttention(dim)
        self.missing = nn.Parameter(torch.zeros(dim))

    def forward(self, rois: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.attention(self.project(rois), mask)
        pooled = weighted_mean(h, mask.float())
        present = mask.any(dim=1)
        pooled = torch.where(present[:, None], pooled, self.missing.to(pooled.dtype).expand_as(pooled))
        return pooled, present


def _projection(in_dim: int, shared: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, shared), nn.Tanh(), nn.Linear(shared, shared))


REDUCTIONS = ("sum", "mean")


def info_nce(a: torch.Tensor, b: torch.Tensor, positive: torch.Tensor,
             temperature: float, reduction: str = "sum") -> torch.Tensor | None:
    """-Σ over positives j of log(φ(a_j, b_j) / Σ_k φ(a_k, b_k)) (eq. 11-12), or the mean over
    the positives with reduction="mean". a, b [N, d], positive [N] bool. None with < 2 pairs
    or no positive."""
    if a.shape[0] < 2 or not bool(positive.any()):
        return None
    similarity = F.cosine_similarity(a.float(), b.float(), dim=-1) / temperature
    log_share = similarity - torch.logsumexp(similarity, dim=0)
    chosen = log_share[positive]
    return -(chosen.sum() if reduction == "sum" else chosen.mean())


def _first_of_each(index: torch.Tensor) -> torch.Tensor:
    """Positions of the first row of each distinct value of `index` [B]."""
    _, inverse = torch.unique(index, return_inverse=True)
    positions = torch.arange(len(index), device=index.device)
    first = torch.full((int(inverse.max()) + 1,), len(index), device=index.device,
                       dtype=positions.dtype)
    return first.scatter_reduce(0, inverse, positions, reduce="amin")


class SANCL(RankingModel):
    """SANCL over static vectors, frozen features or a fine-tuned transformer, with or without
    RoI features and probes."""

    # every parameter is in every forward's graph (rows without images use `missing` through
    # torch.where, the product projections feed the contrastive terms and the scores)
    find_unused_parameters = False

    def __init__(self, config: dict, inputs: ModelInputs):
        super().__init__()
        require_text(inputs, "SANCL")
        text_hidden = int(config["text_hidden"])
        image_hidden = int(config["image_hidden"])
        shared = int(config["shared_hidden"])
        dropout = float(config["embedding_dropout"])
        freeze = bool(config["freeze_embeddings"])
        self.kappa = float(config["kappa"])
        self.temperature = float(config["temperature"])
        self.relevance_threshold = float(config["relevance_threshold"])
        self.reduction = str(config.get("contrastive_reduction", "sum"))
        if self.reduction not in REDUCTIONS:
            raise InputError(f"contrastive_reduction must be one of {list(REDUCTIONS)}, got "
                             f"'{self.reduction}'", field="model.contrastive_reduction",
                             hint="sum is eq. 11-12 of the paper; mean averages over positives")
        beta = config["probe_beta"]
        self.fixed_beta = None if beta == "learned" else float(beta)
        self.use_probes = inputs.has_probes
        self.use_images = inputs.image_dim is not None

        self.product_tokens = TokenInput(inputs, "product", dropout, freeze)
        self.review_tokens = TokenInput(inputs, "review", dropout, freeze)
        self.product_gru = GRUEncoder(inputs.text_dim, text_hidden)
        self.review_gru = GRUEncoder(inputs.text_dim, text_hidden)
        self.beta = nn.Linear(text_hidden, 1) if self.use_probes and self.fixed_beta is None else None
        self.review_attention = SelfAttention(text_hidden)
        self.product_attention = SelfAttention(text_hidden)
        self.cross_attention = CrossFieldAttention(text_hidden)
        self.project = nn.ModuleDict({"ii_t": _projection(text_hidden, shared),
                                      "pr_t": _projection(text_hidden, shared)})
        if self.use_images:
            self.review_images = ImageEncoder(inputs.image_dim, image_hidden)
            self.product_images = ImageEncoder(inputs.image_dim, image_hidden)
            self.project["ii_v"] = _projection(image_hidden, shared)
            self.project["pr_v"] = _projection(image_hidden, shared)
        self.output = nn.Linear(shared * len(self.project), 1)

    def _probe_weights(self, batch: Batch, review_last: torch.Tensor,
                       mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """M' = M + β(1 - M) at real tokens, 0 at padding; plain mask without probes."""
        real = mask.float()
        if not self.use_probes or "review_probe" not in batch:
            return real, None
        probe = batch["review_probe"].float()
        if self.beta is not None:
            beta = torch.sigmoid(self.beta(review_last.float()))               # [B, 1]
        else:
            beta = torch.full_like(real[:, :1], self.fixed_beta)
        return (probe + beta * (1 - probe)) * real, beta

    def forward(self, batch: Batch) -> ModelOutput:
        product_mask, review_mask = batch["product_text_mask"], batch["review_text_mask"]
        product_tokens = self.product_tokens(batch["product_text"], product_mask)
        review_tokens = self.review_tokens(batch["review_text"], review_mask)
        product, _ = self.product_gru(product_tokens, product_mask)
        review, review_last = self.review_gru(review_tokens, review_mask)

        weights, beta = self._probe_weights(batch, review_last, review_mask)
        review = self.review_attention(review, review_mask, weights if beta is not None else None)
        product = self.product_attention(product, product_mask)
        review = self.cross_attention(product, product_mask, review, review_mask)
        pooled = {"t_r": weighted_mean(review, weights),
                  "t_p": weighted_mean(product, product_mask.float())}
        if self.use_images:
            pooled["v_r"], review_has_image = self.review_images(batch["review_image"],
                                                                 batch["review_image_mask"])
            pooled["v_p"], product_has_image = self.product_images(batch["product_image"],
                                                                   batch["product_image_mask"])
        space = {}
        for domain in ("ii", "pr"):
            for modality in ("t", "v") if self.use_images else ("t",):
                net = self.project[f"{domain}_{modality}"]
                for field in ("r", "p"):
                    space[f"{domain}_{modality}_{field}"] = net(pooled[f"{modality}_{field}"])
        features = [space["ii_t_r"], space["pr_t_r"]]
        if self.use_images:
            features += [space["ii_v_r"], space["pr_v_r"]]
        score = self.output(torch.cat(features, dim=-1)).squeeze(-1)

        helpful = batch["label"] > self.relevance_threshold
        terms = {"cpc_pr_t": info_nce(space["pr_t_r"], space["pr_t_p"], helpful,
                                      self.temperature, self.reduction)}
        if self.use_images:
            both = review_has_image & product_has_image
            terms["cpc_pr_v"] = info_nce(space["pr_v_r"][both], space["pr_v_p"][both],
                                         helpful[both], self.temperature, self.reduction)
            products = _first_of_each(batch["product_index"])
            products = products[product_has_image[products]]
            text = torch.cat([space["ii_t_p"][products], space["ii_t_r"][review_has_image]])
            image = torch.cat([space["ii_v_p"][products], space["ii_v_r"][review_has_image]])
            positive = torch.cat([torch.ones_like(products, dtype=torch.bool),
                                  helpful[review_has_image]])
            terms["cpc_ii"] = info_nce(text, image, positive, self.temperature, self.reduction)
        present = [t for t in terms.values() if t is not None]
        aux = self.kappa * torch.stack(present).sum() if present else score.new_zeros(())
        logs = {name: float(t.detach()) for name, t in terms.items() if t is not None}
        if beta is not None:
            logs["beta"] = float(beta.detach().mean())
        return ModelOutput(score=score, aux_loss=aux, logs=logs)
