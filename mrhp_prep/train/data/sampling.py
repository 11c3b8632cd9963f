"""Which reviews make up each training batch, and the order of evaluation batches.

Training batches are made of groups of one positive and K negatives of the same product:

- `groups` (MCR's scheme): every review is a positive when its product has reviews with a
  label at least `min_label_gap` lower (label < level - 1 for the default gap 2); its K = 7
  negatives are drawn from those with replacement, each weighted by 1 - (share of its label
  among the split's reviews); batch = 4 groups x 8 rows = 32 rows.
- `pairs` (the papers' plain pairwise hinge): K = 1 negative drawn uniformly among the
  product's reviews with a lower label (gap 1); batch = 16 pairs = 32 rows.

With `resample: false` (the released SANCL configs: one pre-sampled pair file) the groups are
drawn once, as epoch 0 draws them, and only their order changes from epoch to epoch.

A plan depends only on (seed, epoch), so a resumed run replays the same batches, and under
DDP rank r takes every world_size-th batch (the last incomplete round is dropped so every
rank runs the same number of steps).

`sampled_dev_rows` builds the released SANCL dev set: pairs drawn once from the dev split, on
which the dev metrics that pick the best epoch are computed (`data.dev_set: sampled`).
"""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np
import torch

from ..settings.typed_sections import section_fields


class SamplingConfig(section_fields("sampling")):
    """The `sampling:` section of a training config: scheme, negatives, min_label_gap,
    weighted, resample (declared in `settings/training_settings.py`)."""

    @classmethod
    def from_config(cls, section: Mapping) -> "SamplingConfig":
        """The section read by its declarations (scheme, ranges); `pairs` fixes the rest."""
        config = super().from_config(section)
        if config.scheme == "pairs":
            return cls(scheme="pairs", negatives=1, min_label_gap=1, weighted=False,
                       resample=config.resample)
        return config

    @property
    def group_size(self) -> int:
        return 1 + self.negatives


def label_weights(labels: np.ndarray) -> dict[float, float]:
    """1 - (share of each label among `labels`): rare labels are drawn more often."""
    values, counts = np.unique(labels, return_counts=True)
    return {float(v): 1.0 - c / len(labels) for v, c in zip(values, counts)}


def sample_groups(labels: np.ndarray, rows_by_product: list[np.ndarray], config: SamplingConfig,
                  rng: np.random.Generator) -> np.ndarray:
    """[G, 1 + K] row indices: column 0 the positive, the rest its negatives."""
    row_weights = None
    if config.weighted:
        weights_of = label_weights(labels)
        row_weights = np.array([weights_of[float(v)] for v in labels])
    groups = []
    for rows in rows_by_product:
        product_labels = labels[rows]
        for position, row in enumerate(rows):
            candidates = rows[product_labels <= product_labels[position] - config.min_label_gap]
            if len(candidates) == 0:
                continue
            p = None
            if row_weights is not None:
                w = row_weights[candidates]
                p = w / w.sum() if w.sum() > 0 else None
            negatives = rng.choice(candidates, size=config.negatives, replace=True, p=p)
            groups.append(np.concatenate([[row], negatives]))
    if not groups:
        return np.zeros((0, config.group_size), dtype=np.int64)
    return np.stack(groups).astype(np.int64)


class GroupBatchSampler(torch.utils.data.Sampler):
    """Yields lists of row indices: whole groups, shuffled across products, per epoch.

    `set_epoch(e)` selects the epoch's plan; `skip(n)` starts it after n batches (resume).
    """

    def __init__(self, labels: np.ndarray, rows_by_product: list[np.ndarray],
                 config: SamplingConfig, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1):
        self.labels, self.rows_by_product, self.config = labels, rows_by_product, config
        self.groups_per_batch = max(1, batch_size // config.group_size)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.start = 0, 0
        self._plan: tuple[int, list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.start = epoch, 0

    def skip(self, batches: int) -> None:
        self.start = batches

    def plan(self, epoch: int) -> list[np.ndarray]:
        """All batches of an epoch for this rank: each [groups_per_batch * (1 + K)] rows."""
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1]
        draw = epoch if self.config.resample else 0
        rng = np.random.default_rng([self.seed, draw])
        groups = sample_groups(self.labels, self.rows_by_product, self.config, rng)
        if draw != epoch:       # the same groups, this epoch's order
            rng = np.random.default_rng([self.seed, epoch])
        groups = groups[rng.permutation(len(groups))]
        batches = [groups[i:i + self.groups_per_batch].reshape(-1)
                   for i in range(0, len(groups), self.groups_per_batch)]
        usable = len(batches) - len(batches) % self.world_size
        self._plan = (epoch, batches[self.rank:usable:self.world_size])
        return self._plan[1]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.plan(self.epoch)[self.start:]:
            yield batch.tolist()

    def __len__(self) -> int:
        return len(self.plan(self.epoch)) - self.start


DEV_POSITIVES = 3      # the released SANCL eval config: max_pos_samples
DEV_NEGATIVES = 5      # ... and num_neg


def sampled_dev_rows(labels: np.ndarray, rows_by_product: list[np.ndarray], seed: int,
                     positives: int = DEV_POSITIVES, negatives: int = DEV_NEGATIVES,
                     weighted: bool = True) -> np.ndarray:
    """Row indices of the released SANCL dev set, grouped by product (rows repeat).

    Per product, for every label level but its lowest: `positives` reviews of that level drawn
    with replacement, each followed by `negatives` reviews with a lower label, drawn with
    replacement, weighted by 1 - (share of their label in the split). A product whose reviews
    all share one label contributes nothing. Drawn once, from (seed, "dev").
    """
    rng = np.random.default_rng([seed, 0xDE5])
    row_weights = None
    if weighted:
        weights_of = label_weights(labels)
        row_weights = np.array([weights_of[float(v)] for v in labels])
    chosen: list[np.ndarray] = []
    for rows in rows_by_product:
        product_labels = labels[rows]
        for level in np.unique(product_labels)[::-1][:-1]:     # high to low, not the lowest
            at_level = rows[product_labels == level]
            lower = rows[product_labels < level]
            p = None
            if row_weights is not None and row_weights[lower].sum() > 0:
                p = row_weights[lower] / row_weights[lower].sum()
            for row in rng.choice(at_level, size=positives, replace=True):
                chosen.append(np.concatenate([[row], rng.choice(lower, size=negatives,
                                                                replace=True, p=p)]))
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(chosen).astype(np.int64)


def evaluation_batches(rows_by_product: list[np.ndarray], batch_rows: int, rank: int = 0,
                       world_size: int = 1) -> list[list[int]]:
    """Every review of this rank's products (product p goes to rank p % world_size) in
    batches of at most `batch_rows` rows, products kept whole where they fit."""
    mine = [rows for p, rows in enumerate(rows_by_product) if p % world_size == rank]
    batches, current = [], []
    for rows in mine:
        if current and len(current) + len(rows) > batch_rows:
            batches.append(current)
            current = []
        for start in range(0, len(rows), batch_rows):
            chunk = rows[start:start + batch_rows].tolist()
            if len(chunk) == batch_rows:
                batches.append(chunk)
            else:
                current.extend(chunk)
    if current:
        batches.append(current)
    return batches
