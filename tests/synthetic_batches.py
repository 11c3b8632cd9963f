"""Synthetic batches in the layout of mrhp_prep/train/models/base.py, for model tests.

Small on purpose: the point is shapes, masks and optimisation behaviour, not accuracy.
"""

from __future__ import annotations

import torch

from mrhp_prep.train.models.base import ModelInputs

VOCAB = 50
WORD_DIM = 12
TEXT_FEATURE_DIM = 24
IMAGE_DIM = 32
# The widest sum of the tiny models over these batches (small_options: image features and
# the image feed-forward layer are 32 wide), for tolerances.network_rtol.
SMALL_WIDEST = 32


def word_vectors(seed: int = 0) -> dict[str, torch.Tensor]:
    """Static word vectors for both fields: [VOCAB, WORD_DIM] float32, row 0 = <pad>."""
    generator = torch.Generator().manual_seed(seed)
    tables = {}
    for field in ("product", "review"):
        table = torch.randn(VOCAB, WORD_DIM, generator=generator)
        table[0] = 0.0
        tables[field] = table
    return tables


def _prefix_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    return torch.arange(width)[None, :] < lengths[:, None]


def make_batch(text: str = "ids", rows_per_product: int = 4, products: int = 3,
               missing_images: str = "some", seed: int = 0,
               review_index_offset: int = 0) -> dict[str, torch.Tensor]:
    """A batch of products x rows_per_product review rows.

    text: "ids" (LongTensor token ids into word_vectors()) or "features" (float [B, L, 24]).
    missing_images: "some" (product 0 and every third review have none), "all" or "none".
    Labels 0..4 vary within each product, so every product gives ranking pairs.
    """
    generator = torch.Generator().manual_seed(seed)
    batch_size = rows_per_product * products
    product_len, review_len, rois = 10, 8, 6
    product_index = torch.arange(products).repeat_interleave(rows_per_product)

    def text_tensor(width: int, per_product: bool) -> tuple[torch.Tensor, torch.Tensor]:
        count = products if per_product else batch_size
        lengths = torch.randint(3, width + 1, (count,), generator=generator)
        mask = _prefix_mask(lengths, width)
        if text == "ids":
            values = torch.randint(2, VOCAB, (count, width), generator=generator) * mask
        else:
            values = (torch.randn(count, width, TEXT_FEATURE_DIM, generator=generator)
                      * mask[..., None])
        if per_product:
            values, mask = values[product_index], mask[product_index]
        return values, mask

    def image_tensor(per_product: bool) -> tuple[torch.Tensor, torch.Tensor]:
        count = products if per_product else batch_size
        lengths = torch.randint(2, rois + 1, (count,), generator=generator)
        if missing_images == "all":
            lengths[:] = 0
        elif missing_images == "some":
            lengths[0] = 0
            lengths[::3] = 0
        mask = _prefix_mask(lengths, rois)
        features = torch.rand(count, rois, IMAGE_DIM, generator=generator) * mask[..., None]
        if per_product:
            features, mask = features[product_index], mask[product_index]
        return features, mask

    product_text, product_text_mask = text_tensor(product_len, per_product=True)
    review_text, review_text_mask = text_tensor(review_len, per_product=False)
    product_image, product_image_mask = image_tensor(per_product=True)
    review_image, review_image_mask = image_tensor(per_product=False)
    label = torch.tensor([float(i % 5) for i in range(rows_per_product)]).repeat(products)
    return {
        "product_text": product_text, "product_text_mask": product_text_mask,
        "review_text": review_text, "review_text_mask": review_text_mask,
        "product_image": product_image, "product_image_mask": product_image_mask,
        "review_image": review_image, "review_image_mask": review_image_mask,
        "review_probe": review_text_mask.float(),
        "label": label,
        "product_index": product_index,
        "review_index": torch.arange(batch_size) + review_index_offset,
    }


def pairwise_hinge(score: torch.Tensor, label: torch.Tensor, product_index: torch.Tensor,
                   margin: float = 1.0) -> torch.Tensor:
    """Mean of max(0, margin - s+ + s-) over the pairs of one product with label+ > label-."""
    better = (label[:, None] > label[None, :]) & (product_index[:, None] == product_index[None, :])
    gaps = margin - score[:, None] + score[None, :]
    return torch.relu(gaps)[better].mean()


def total_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's pairwise hinge loss on `batch` plus its auxiliary loss (if any): scalar."""
    out = model(batch)
    loss = pairwise_hinge(out.score, batch["label"], batch["product_index"])
    return loss if out.aux_loss is None else loss + out.aux_loss


# Every dropout option of MCL and MM-SS off, so a forward is deterministic.
NO_DROPOUT = {"dropout": 0.0, "embedding_dropout": 0.0, "image_dropout": 0.0,
              "image_attention_dropout": 0.0}


def small_options() -> dict:
    """Option overrides that keep the models tiny for tests (shared by MCL and MM-SS)."""
    return {"hidden_dim": 16, "image_layers": 1, "image_ffn_dim": 32}


def inputs_for(text: str, images: bool = True, vectors: dict | None = None,
               text_dim: int | None = None) -> ModelInputs:
    """The ModelInputs a run over make_batch(text) data would give a model."""
    if text == "ids":
        vectors = vectors or word_vectors()
        return ModelInputs(text_mode="static", text_dim=vectors["product"].shape[1],
                           product_vectors=vectors["product"].numpy(),
                           review_vectors=vectors["review"].numpy(),
                           image_dim=IMAGE_DIM if images else None)
    return ModelInputs(text_mode="features", text_dim=text_dim or TEXT_FEATURE_DIM,
                       image_dim=IMAGE_DIM if images else None)


def without_images(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch of a text-only run: no image keys at all."""
    return {k: v for k, v in batch.items() if "_image" not in k}

