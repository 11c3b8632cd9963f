"""The training data: manifest rows joined by id with the RoI, text and probe stores.

`FeatureSources` opens the manifest and whichever stores the run has (each is optional: a run
without a RoI store is text-only, one without probe masks runs plain attention).
`SplitTable` lists one split's reviews (manifest order, grouped by product) with where each
one's features live. `ReviewDataset[i]` reads review row i and its product from the
memory-mapped stores; `collate` pads a list of rows into the batch dict of `models/base.py`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ...data.manifest import Manifest
from ...errors import InputError
from .checks import check_text_sources
from .coverage import has_regions
from ..models.base import ModelInputs
from ..settings.typed_sections import section_fields
from .stores import ProbeShards, TextShards, open_rois, token_probe_mask
from .stores import text_mode as store_text_mode

log = logging.getLogger(__name__)


class DataConfig(section_fields("data")):
    """The `data:` section of a training config: one field per setting declared in
    `settings/training_settings.py` (docs/settings.md), e.g. `max_text_tokens`."""


class FeatureSources:
    """A manifest and the optional feature stores of one run, opened once for all splits.

    `vocabularies` (field -> token list) maps a static-mode text store into another vocabulary
    by token string: a trained model keeps its training vocabulary when it scores products
    embedded later with a vocabulary of their own. Unknown tokens become id 1.
    """

    def __init__(self, manifest: str | Path, rois: str | Path | None = None,
                 text: str | Path | None = None, probes: str | Path | None = None,
                 vocabularies: Mapping[str, Sequence[str]] | None = None):
        self.manifest = Manifest(manifest)
        self.rois = open_rois(rois) if rois else None
        self.text: dict[str, TextShards] = {}
        self.id_maps: dict[str, np.ndarray | None] = {"product": None, "review": None}
        if text:
            for name in ("product", "review"):
                self.text[name] = TextShards(text, name)
            if vocabularies:
                for name, vocab in vocabularies.items():
                    self.id_maps[name] = _vocabulary_map(self.text[name].vocab or [], vocab)
        if self.text:
            check_text_sources(self)    # non-finite vectors, ids or offsets out of range
        self.probes = ProbeShards(probes) if probes else None
        # manifest images the RoI store gives no region (absent, or stored with none): read
        # once here, for the items' images and for the store's coverage
        self.images_without_regions: frozenset[str] = frozenset()
        self.item_images = self._item_images()

    @staticmethod
    def peek_text_mode(text: str | Path) -> str:
        """The mode ("static", "ids", "features") of an embed-text output."""
        return store_text_mode(text)

    @property
    def text_mode(self) -> str | None:
        return self.text["review"].mode if self.text else None

    @property
    def images_missing(self) -> int:
        """How many manifest images have no region in the RoI store."""
        return len(self.images_without_regions)

    def model_inputs(self, vectors: Mapping[str, np.ndarray] | None = None) -> ModelInputs:
        """What a model is built on. `vectors` replaces the stores' static vectors (the training
        vocabulary's, when this store was re-mapped into it)."""
        product_vectors = review_vectors = None
        if self.text_mode == "static":
            product_vectors = (vectors or {}).get("product", self.text["product"].vectors)
            review_vectors = (vectors or {}).get("review", self.text["review"].vectors)
        return ModelInputs(
            text_mode=self.text_mode,
            text_dim=self.text["review"].dim if self.text else 0,
            product_vectors=product_vectors, review_vectors=review_vectors,
            image_dim=self.rois.feature_dim if self.rois is not None else None,
            has_probes=self.probes is not None,
            text_model=(self.text["review"].info.get("tokenizer") or {}).get("model")
            if self.text_mode == "ids" else None,
            relevance_threshold=self.manifest.relevance_threshold)

    def _item_images(self) -> dict[str, list[str]]:
        """item id -> its image ids in the RoI store, in manifest order (k)."""
        if self.rois is None:
            return {}
        images = self.manifest.images.sort_values(["item_id", "k"], kind="stable")
        # an image stored with no region counts as missing (coverage.has_regions)
        present = images["image_id"].map(lambda i: has_regions(self.rois, i)).to_numpy(dtype=bool)
        self.images_without_regions = frozenset(images["image_id"][~present])
        if self.images_missing:
            log.warning("%d of %d manifest images have no RoI features in %s; their items use "
                        "the images that do", self.images_missing, len(images), self.rois.path)
        kept = images[present]
        return {item: group.tolist() for item, group in kept.groupby("item_id")["image_id"]}

    def split(self, name: str | None = None, products: Sequence[str] | None = None) -> "SplitTable":
        """The reviews of one split (or of the given products, any split), joined with stores."""
        reviews = self.manifest.reviews
        if products is not None:
            wanted = pd.Index(products)
            unknown = wanted.difference(self.manifest.products["product_id"])
            if len(unknown):
                raise InputError(f"product(s) not in the manifest: {', '.join(unknown[:5])}",
                                 file=str(self.manifest.path), field="product_id",
                                 hint="pass ids of the manifest's products.parquet")
            reviews = reviews[reviews["product_id"].isin(wanted)]
        if name is not None:
            reviews = reviews[reviews["split"] == name]
        return SplitTable.build(name or "selected", reviews.reset_index(drop=True), self)


def _vocabulary_map(source: Sequence[str], target: Sequence[str]) -> np.ndarray | None:
    """[len(source)] int32: each source id's id in `target` (1 = unknown); None if identical."""
    if list(source) == list(target):
        return None
    lookup = {token: i for i, token in enumerate(target)}
    mapping = np.array([lookup.get(token, 1) for token in source], dtype=np.int32)
    if len(mapping):
        mapping[0] = 0
    return mapping


def _locate(ids: pd.Series, store) -> np.ndarray:
    """[n, 2] int64 (part, row) of each id in a store; -1 where the store lacks it."""
    locations = store.locations().drop_duplicates("id", keep="first").set_index("id")
    joined = locations.reindex(ids.to_numpy())
    return joined.fillna(-1).to_numpy(dtype=np.int64)


@dataclass
class SplitTable:
    """One split's review rows, grouped by product in manifest order.

    Per row: review_ids, product_ids, labels [n] float32, product_index [n] (into `products`),
    review_text / probe locations [n, 2] ((part, row), -1 = absent); per product:
    product_text locations [P, 2]. `dropped` lists reviews left out and why.
    """

    name: str
    review_ids: np.ndarray
    product_ids: np.ndarray
    labels: np.ndarray
    product_index: np.ndarray
    products: list[str]
    review_text: np.ndarray | None
    product_text: np.ndarray | None
    probe: np.ndarray | None
    dropped: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, name: str, reviews: pd.DataFrame, sources: FeatureSources) -> "SplitTable":
        # group rows by product, keeping the manifest order of products and of their reviews
        first_seen = pd.unique(reviews["product_id"])
        order = pd.Categorical(reviews["product_id"], categories=first_seen)
        reviews = reviews.iloc[np.argsort(order.codes, kind="stable")].reset_index(drop=True)
        dropped: dict[str, list[str]] = {}
        review_text = product_text = None
        if sources.text:
            review_text = _locate(reviews["review_id"], sources.text["review"])
            product_loc = _locate(pd.Series(first_seen), sources.text["product"])
            product_of = dict(zip(first_seen, map(tuple, product_loc.tolist())))
            product_rows = np.array([product_of[p] for p in reviews["product_id"]],
                                    dtype=np.int64).reshape(-1, 2)
            no_review_text = review_text[:, 0] < 0
            no_product_text = product_rows[:, 0] < 0
            if no_review_text.any():
                dropped["review text missing from the text store"] = \
                    reviews["review_id"][no_review_text].tolist()
            if (no_product_text & ~no_review_text).any():
                dropped["product text missing from the text store"] = \
                    reviews["review_id"][no_product_text & ~no_review_text].tolist()
            keep = ~(no_review_text | no_product_text)
            reviews, review_text = reviews[keep].reset_index(drop=True), review_text[keep]
        products = list(pd.unique(reviews["product_id"]))
        product_index = pd.Categorical(reviews["product_id"], categories=products).codes
        if sources.text:       # located above, with every product of the split
            product_text = np.array([product_of[p] for p in products],
                                    dtype=np.int64).reshape(-1, 2)
        probe = _locate(reviews["review_id"], sources.probes) if sources.probes else None
        for reason, ids in dropped.items():
            log.warning("%s: %d review(s) of split %s left out (%s)", reason, len(ids), name,
                        ", ".join(ids[:3]) + (" ..." if len(ids) > 3 else ""))
        return cls(name=name, review_ids=reviews["review_id"].to_numpy(dtype=object),
                   product_ids=reviews["product_id"].to_numpy(dtype=object),
                   labels=reviews["label"].to_numpy(dtype=np.float32),
                   product_index=np.asarray(product_index, dtype=np.int64), products=products,
                   review_text=review_text, product_text=product_text, probe=probe,
                   dropped=dropped)

    def __len__(self) -> int:
        return len(self.review_ids)

    def subset(self, rows: np.ndarray, name: str) -> "SplitTable":
        """The table of `rows` (indices into this one, grouped by product; a row may come
        twice): the same products list, so `product_index` and `product_text` still agree."""
        rows = np.asarray(rows, dtype=np.int64)

        def pick(array):
            return None if array is None else array[rows]

        return SplitTable(name=name, review_ids=self.review_ids[rows],
                          product_ids=self.product_ids[rows], labels=self.labels[rows],
                          product_index=self.product_index[rows], products=self.products,
                          review_text=pick(self.review_text), product_text=self.product_text,
                          probe=pick(self.probe))

    def rows_by_product(self) -> list[np.ndarray]:
        """Row indices of each product, in `products` order."""
        bounds = np.flatnonzero(np.diff(self.product_index)) + 1
        return np.split(np.arange(len(self)), bounds) if len(self) else []

    @property
    def reviews_without_probe(self) -> int:
        return int((self.probe[:, 0] < 0).sum()) if self.probe is not None else 0


class ReviewDataset(torch.utils.data.Dataset):
    """Review rows of one split with their product, read from the stores on demand.

    `self[i]` is a dict of numpy arrays: product_text / review_text ([L] int64 ids or
    [L, Dt] float16 features), review_probe [Lr] float32, product_image / review_image
    [R, Dv] float16 (R may be 0), label, product_index, review_index.
    """

    def __init__(self, sources: FeatureSources, table: SplitTable, config: DataConfig):
        self.sources, self.table, self.config = sources, table, config

    def __len__(self) -> int:
        return len(self.table)

    def _text(self, name: str, location: np.ndarray) -> tuple[np.ndarray, dict]:
        item = self.sources.text[name].item(int(location[0]), int(location[1]),
                                            limit=self.config.max_text_tokens)
        values = item["values"]
        if self.sources.text_mode == "static":
            mapping = self.sources.id_maps[name]
            values = mapping[values] if mapping is not None else values
            values = values.astype(np.int64)
        return values, item

    def _images(self, item_id: str) -> np.ndarray:
        rois = self.sources.rois
        blocks = [rois.features(image_id, self.config.max_rois_per_image)
                  for image_id in self.sources.item_images.get(item_id, ())]
        if not blocks:
            return np.zeros((0, rois.feature_dim), np.float16)
        return np.concatenate(blocks)[:self.config.max_image_rows]

    def _product(self, p: int) -> dict:
        item = {}
        if self.sources.text:
            item["product_text"], _ = self._text("product", self.table.product_text[p])
        if self.sources.rois is not None:
            item["product_image"] = self._images(self.table.products[p])
        return item

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """Rows of one batch; each product is read once (a training group shares one)."""
        table, sources = self.table, self.sources
        products: dict[int, dict] = {}
        items = []
        for i in indices:
            i = int(i)
            p = int(table.product_index[i])
            if p not in products:
                products[p] = self._product(p)
            item = {"label": table.labels[i], "product_index": p, "review_index": i,
                    **products[p]}
            if sources.text:
                item["review_text"], review = self._text("review", table.review_text[i])
                if sources.probes is not None:
                    item["review_probe"] = self._probe(i, review)
            if sources.rois is not None:
                item["review_image"] = self._images(table.review_ids[i])
            items.append(item)
        return items

    def _probe(self, i: int, review: dict) -> np.ndarray:
        part, row = self.table.probe[i]
        if part < 0:
            return np.zeros(len(review["token_start"]), np.float32)
        starts, ends = self.sources.probes.marked_spans(int(part), int(row))
        return token_probe_mask(review["token_start"], review["token_end"], starts, ends)


def _pad_text(values: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids [B, L] int64 (0 = pad) or features [B, L, Dt] float16, and the mask [B, L]."""
    lengths = [len(v) for v in values]
    length = max(1, max(lengths))
    first = values[0]
    shape = (len(values), length) + first.shape[1:]
    # np.zeros maps untouched pages lazily: padding costs no writes
    out = np.zeros(shape, dtype=np.int64 if first.ndim == 1 else first.dtype)
    for row, v in enumerate(values):
        out[row, :len(v)] = v
    mask = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
    return torch.from_numpy(out), mask


def _pad_images(blocks: list[np.ndarray], config: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """RoI features [B, R, Dv] float16 with 16 <= R <= 128 rows, and the mask [B, R]."""
    counts = [len(b) for b in blocks]
    rows = min(max(config.min_image_rows, max(counts)), config.max_image_rows)
    out = np.zeros((len(blocks), rows, blocks[0].shape[1]), dtype=blocks[0].dtype)
    for row, block in enumerate(blocks):
        out[row, :len(block)] = block
    mask = torch.arange(rows)[None, :] < torch.tensor(counts)[:, None]
    return torch.from_numpy(out), mask


class Collate:
    """Pads a list of `ReviewDataset` items into the batch dict of `models/base.py`.

    Features stay in their stored precision (float16: half the bytes to copy, pin and move);
    `trainer.to_device` turns them into float32 on the device, so models see float32.

    With `share_products`, each distinct product's RoI features are padded once:
    `product_image` [P, R, Dv] and `product_image_mask` [P, R] for the P products of the
    batch, and `product_slot` [B] says which of them each row belongs to. A training batch
    holds a few products' reviews (4 of 32 rows, typically), so this sends a fraction of the
    bytes from the loader workers; `trainer.to_device` widens it back to one row per review
    on the device, where the models see the same [B, R, Dv] as without it.
    """

    def __init__(self, config: DataConfig, share_products: bool = False):
        self.config = config
        self.share_products = share_products

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        batch = {
            "label": torch.tensor([float(it["label"]) for it in items], dtype=torch.float32),
            "product_index": torch.tensor([it["product_index"] for it in items]),
            "review_index": torch.tensor([it["review_index"] for it in items]),
        }
        if "review_text" in items[0]:
            for name in ("product_text", "review_text"):
                batch[name], batch[f"{name}_mask"] = _pad_text([it[name] for it in items])
        if "review_probe" in items[0]:
            probe, _ = _pad_text([it["review_probe"][:, None] for it in items])
            batch["review_probe"] = probe[..., 0]
        if "review_image" in items[0]:
            products = [it["product_image"] for it in items]
            if self.share_products:
                slot_of: dict[int, int] = {}
                distinct, slots = [], []
                for item in items:
                    if item["product_index"] not in slot_of:
                        slot_of[item["product_index"]] = len(distinct)
                        distinct.append(item["product_image"])
                    slots.append(slot_of[item["product_index"]])
                products = distinct
                batch["product_slot"] = torch.tensor(slots)
            batch["product_image"], batch["product_image_mask"] = _pad_images(products,
                                                                              self.config)
            batch["review_image"], batch["review_image_mask"] = _pad_images(
                [it["review_image"] for it in items], self.config)
        return batch


# Batch entries given once per product when `Collate(share_products=True)`.
PER_PRODUCT_KEYS = ("product_image", "product_image_mask")
