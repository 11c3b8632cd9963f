"""SANCL: probe-based selective attention and multi-domain natural contrastive learning.

From the paper (Han et al., COLING 2022), per review row with its product; docs/fidelity.md
sets every step beside the paper's words and the released code:

1. Text (3.3): token vectors (static GloVe-like vectors, frozen BERT features or a fine-tuned
   BERT; dropout) run through a uni-directional GRU per field: token states H [L, h] and a
   sequence state h_seq.
2. Selective attention on the review text (3.4, eq. 2-7): the probe mask M (1 = token in a
   sentence that mentions the product) becomes M' = M + β(1 - M), β = sigmoid(W h_seq + b)
   learned per review (or fixed); A = softmax(q(H) k(H)^T) over the real tokens (no 1/√d, as
   the released code), A' = M'^T M' ⊙ A, H' = H + A'H. The product text has no
   self-attention (neither the paper nor the released code gives it one).
3. Cross-field text attention: review tokens gather the product's tokens (H'' = H' + ...);
   the review is pooled with M' as weights (eq. 8), the product by its mean.
4. Images (3.3, 3.4): RoI features through MCR's image encoder (Linear 2048 -> 128, 3
   pre-norm transformer layers, final LayerNorm; `sancl_layers.RoiImageEncoder`), one
   encoder for both fields (`image_encoders: shared`, as released; `per-field` gives each
   its own). Review regions attend over the product's regions ("cross-image attention",
   padded product regions masked), then average pooling over the real regions. An item
   without an image pools to zeros (and takes no part in the image contrastive terms).
5. Every pooled vector goes into two shared spaces (eq. 9: inner-instance "ii" and
   product-review "pr"), one two-layer tanh network per (domain, modality), shared by the
   product and review fields. The score is a linear layer over the review's four projections
   [S^ii_t, S^pr_t, S^ii_v, S^pr_v] (eq. 14-15; text-only runs: the two text ones).
6. Auxiliary loss κ (cpc_ii + cpc^t_pr + cpc^v_pr), each an InfoNCE over the batch with
   φ(a, b) = exp(cos(a, b) / τ) (eq. 10-13): in ii, an instance's text against its own image
   (products and helpful reviews are positives, unhelpful reviews negatives); in pr, a review
   against its product's projection of the same modality (helpful reviews positive).
   "Helpful" is label > relevance_threshold. Each term sums -log share over its positives, as
   eq. 11-12 write it (`contrastive_reduction: sum`); `mean` averages over the positives.

`architecture: released` adds what the released model has and the paper's equations leave
out: a predictor (Linear, tanh, Linear) in front of one side of each contrastive score (two per
domain, `cpc_ii` and `cpc_pr`), and an MLP scorer 8·s -> 128 -> 64 -> 1 over the review's and
the product's projections instead of eq. 15's linear layer over the review's.

Size at GloVe 300-d, images and probes, shared hidden 64: 1,303,682 parameters (paper) and
1,410,690 (released; the paper's "1.41M excluding the embedding layer" is this count of the
released model). See docs/fidelity.md.

Config: the `model:` section, `SanclOptions` (declared in settings/model_settings.py; every
key, its range and default in docs/settings.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..settings.model_settings import ENCODER_KEYS
from ..settings.typed_sections import section_fields
from .base import Batch, ModelInputs, ModelOutput, RankingModel, relevance_threshold
from .layers import GRUEncoder, SelfAttention, TokenInput, require_text, weighted_mean
from .sancl_layers import Predictor, ProductAwareAttention, RoiImageEncoder

RELEASED_SCORER = (128, 64)     # the released MLP's hidden widths


class SanclOptions(section_fields("model", "sancl", exclude=ENCODER_KEYS)):
    """SANCL's `model:` settings (declared in `settings/model_settings.py`; docs/settings.md),
    the text encoder's keys left to `text_encoder.py`. Keys a config lacks (a run folder made
    before they existed) take their declared default; `relevance_threshold: auto` is the
    dataset's (`base.relevance_threshold`)."""


def _projection(in_dim: int, shared: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, shared), nn.Tanh(), nn.Linear(shared, shared))


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

    def __init__(self, config: dict, inputs: ModelInputs):
        super().__init__()
        require_text(inputs, "SANCL")
        self.options = options = SanclOptions.from_config(config)
        self.architecture = options.architecture
        self.reduction = options.contrastive_reduction
        text_hidden = int(options.text_hidden)
        image_hidden = int(options.image_hidden)
        shared = int(options.shared_hidden)
        dropout = float(options.embedding_dropout)
        freeze = bool(options.freeze_embeddings)
        self.kappa = float(options.kappa)
        self.temperature = float(options.temperature)
        self.relevance_threshold = relevance_threshold(options.relevance_threshold, inputs)
        beta = options.probe_beta
        self.fixed_beta = None if beta == "learned" else float(beta)
        self.use_probes = inputs.has_probes
        self.use_images = inputs.image_dim is not None
        released = self.architecture == "released"
        # paper: every parameter is in every forward's graph (the product projections share
        # their networks with the review's, which score); released: a predictor misses the
        # graph in a batch whose contrastive term has no positive
        self.find_unused_parameters = released

        self.product_tokens = TokenInput(inputs, "product", dropout, freeze)
        self.review_tokens = TokenInput(inputs, "review", dropout, freeze)
        self.product_gru = GRUEncoder(inputs.text_dim, text_hidden)
        self.review_gru = GRUEncoder(inputs.text_dim, text_hidden)
        learned_beta = self.use_probes and self.fixed_beta is None
        self.beta = nn.Linear(text_hidden, 1) if learned_beta else None
        self.review_attention = SelfAttention(text_hidden, scaled=False)
        self.text_cross_attention = ProductAwareAttention(text_hidden)
        if self.use_images:
            def encoder() -> RoiImageEncoder:
                return RoiImageEncoder(
                    int(inputs.image_dim), image_hidden, int(options.image_layers),
                    int(options.image_heads), int(options.image_ffn_dim),
                    float(options.image_dropout), float(options.image_attention_dropout),
                    float(options.image_relu_dropout))

            if options.image_encoders == "shared":
                self.image_encoder = encoder()
            else:
                self.product_image_encoder = encoder()
                self.review_image_encoder = encoder()
            self.image_cross_attention = ProductAwareAttention(image_hidden)
        self.project = nn.ModuleDict({"ii_t": _projection(text_hidden, shared),
                                      "pr_t": _projection(text_hidden, shared)})
        if self.use_images:
            self.project["ii_v"] = _projection(image_hidden, shared)
            self.project["pr_v"] = _projection(image_hidden, shared)
        if released:
            if self.use_images:
                self.cpc_ii = nn.ModuleDict({"product": Predictor(shared),
                                             "review": Predictor(shared)})
            self.cpc_pr = nn.ModuleDict({"text": Predictor(shared)})
            if self.use_images:
                self.cpc_pr["image"] = Predictor(shared)
            width, (first, second) = 2 * shared * len(self.project), RELEASED_SCORER
            self.output = nn.Sequential(nn.Linear(width, first), nn.ReLU(),
                                        nn.Linear(first, second), nn.ReLU(),
                                        nn.Linear(second, 1))
        else:
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

    def _encode_images(self, batch: Batch, field: str) -> torch.Tensor:
        encoder = getattr(self, "image_encoder", None) or getattr(self, f"{field}_image_encoder")
        return encoder(batch[f"{field}_image"], batch[f"{field}_image_mask"])

    def pooled_images(self, batch: Batch) -> dict[str, torch.Tensor]:
        """v_p, v_r [B, d_v] (the product's encoded regions averaged; the review's regions
        after their cross-image attention over the product's, averaged) and has_p, has_r [B]."""
        product_mask, review_mask = batch["product_image_mask"], batch["review_image_mask"]
        product = self._encode_images(batch, "product")
        review = self.image_cross_attention(product, product_mask,
                                            self._encode_images(batch, "review"), review_mask)
        return {"v_p": weighted_mean(product, product_mask.float()),
                "v_r": weighted_mean(review, review_mask.float()),
                "has_p": product_mask.any(dim=1), "has_r": review_mask.any(dim=1)}

    def _predicted(self, domain: str, side: str, x: torch.Tensor) -> torch.Tensor:
        """x through the released predictor of (domain, side); unchanged in the paper's model."""
        if self.architecture != "released":
            return x
        return getattr(self, f"cpc_{domain}")[side](x)

    def forward(self, batch: Batch) -> ModelOutput:
        product_mask, review_mask = batch["product_text_mask"], batch["review_text_mask"]
        product_tokens = self.product_tokens(batch["product_text"], product_mask)
        review_tokens = self.review_tokens(batch["review_text"], review_mask)
        product, _ = self.product_gru(product_tokens, product_mask)
        review, review_last = self.review_gru(review_tokens, review_mask)

        weights, beta = self._probe_weights(batch, review_last, review_mask)
        review = self.review_attention(review, review_mask, weights if beta is not None else None)
        review = self.text_cross_attention(product, product_mask, review, review_mask)
        pooled = {"t_r": weighted_mean(review, weights),
                  "t_p": weighted_mean(product, product_mask.float())}
        modalities = ("t", "v") if self.use_images else ("t",)
        if self.use_images:
            pooled.update(self.pooled_images(batch))
        space = {f"{domain}_{modality}_{field}":
                 self.project[f"{domain}_{modality}"](pooled[f"{modality}_{field}"])
                 for domain in ("ii", "pr") for modality in modalities for field in ("r", "p")}
        fields = ("r", "p") if self.architecture == "released" else ("r",)
        features = [space[f"{domain}_{modality}_{field}"] for modality in modalities
                    for field in fields for domain in ("ii", "pr")]
        score = self.output(torch.cat(features, dim=-1)).squeeze(-1)

        helpful = batch["label"] > self.relevance_threshold
        terms = {"cpc_pr_t": info_nce(space["pr_t_r"],
                                      self._predicted("pr", "text", space["pr_t_p"]),
                                      helpful, self.temperature, self.reduction)}
        if self.use_images:
            has_p, has_r = pooled["has_p"], pooled["has_r"]
            both = has_r & has_p
            terms["cpc_pr_v"] = info_nce(
                space["pr_v_r"][both], self._predicted("pr", "image", space["pr_v_p"][both]),
                helpful[both], self.temperature, self.reduction)
            products = _first_of_each(batch["product_index"])
            products = products[has_p[products]]
            text = torch.cat([self._predicted("ii", "product", space["ii_t_p"][products]),
                              self._predicted("ii", "review", space["ii_t_r"][has_r])])
            image = torch.cat([space["ii_v_p"][products], space["ii_v_r"][has_r]])
            positive = torch.cat([torch.ones_like(products, dtype=torch.bool), helpful[has_r]])
            terms["cpc_ii"] = info_nce(text, image, positive, self.temperature, self.reduction)
        present = [t for t in terms.values() if t is not None]
        aux = self.kappa * torch.stack(present).sum() if present else score.new_zeros(())
        logs = {name: t.detach() for name, t in terms.items() if t is not None}
        if beta is not None:
            logs["beta"] = beta.detach().mean()
        return ModelOutput(score=score, aux_loss=aux, logs=logs)
