"""How much of what `train` needs each feature store holds, and the refusal of partial stores.

A store built for other data (another category, one shard of probe masks, an old manifest)
joins by id with only part of the manifest. The trainer would then quietly read zero masks,
no images or fewer reviews; here such a store is an error unless the run allows partial
stores (`--allow-partial` or `data.allow_partial: true`). Items the store's own stage listed
as failed (in its failures.jsonl) are known skips: they are reported, never refused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

from ...cache import read_failures
from ...errors import InputError

WHAT_WRITES = {"text": "embed-text", "rois": "extract-rois", "probes": "probe-masks"}


@dataclass
class StoreCoverage:
    """One store's share of what the run needs: `covered` of `needed` units (reviews or
    images); `listed` absent ones are failures its stage reported; the rest are `missing`,
    `empty` of them stored with nothing in them (an image with no region)."""

    store: str
    path: str
    unit: str
    needed: int
    covered: int
    listed: int
    empty: int = 0

    @property
    def missing(self) -> int:
        return self.needed - self.covered - self.listed

    def describe(self) -> str:
        share = 100.0 * self.covered / self.needed if self.needed else 100.0
        text = f"{self.covered} of {self.needed} {self.unit} ({share:.1f}%)"
        if self.listed:
            text += f"; {self.listed} listed as failed by {WHAT_WRITES[self.store]}"
        if self.missing:
            text += f"; {self.missing} missing"
        if self.empty:
            text += f" ({self.empty} stored with no region)"
        return text

    def as_dict(self) -> dict:
        return {**asdict(self), "missing": self.missing}


def _listed_failures(folder: Path) -> set[str]:
    """Item ids a stage folder's failures.jsonl lists."""
    return {str(failure.get("item")) for failure in read_failures(folder)}


def has_regions(rois, image_id: str) -> bool:
    """Whether a RoI store (`vision.store.RoiStore`) holds at least one region of the image: an
    image stored with none gives the model nothing, so it does not count as covered."""
    row = rois.index.get(image_id)
    return row is not None and int(rois.counts[row]) > 0


def store_coverage(sources, splits: Mapping, items: set[str] | None = None
                   ) -> dict[str, StoreCoverage]:
    """Coverage of each store a FeatureSources has, over the SplitTables of `splits`
    (name -> ReviewDataset); the RoI store's over the images of `items` (product and review
    ids), by default every image of the manifest."""
    tables = [ds.table for ds in splits.values()]
    result = {}
    if sources.text:
        folder = sources.text["review"].folder
        failed = _listed_failures(folder)
        reviews = sources.manifest.reviews
        product_of = dict(zip(reviews["review_id"], reviews["product_id"]))
        absent = [rid for t in tables for reason, ids in t.dropped.items()
                  if "text store" in reason for rid in ids]
        listed = sum(rid in failed or product_of.get(rid) in failed for rid in absent)
        covered = sum(len(t) for t in tables)
        result["text"] = StoreCoverage("text", str(folder), "reviews", covered + len(absent),
                                       covered, listed)
    if sources.rois is not None:
        images = sources.manifest.images
        if items is not None:
            images = images[images["item_id"].isin(items)]
        images = images["image_id"]
        absent = [i for i in images if i in sources.images_without_regions]
        failed = _listed_failures(sources.rois.folder)
        result["rois"] = StoreCoverage("rois", str(sources.rois.path), "images", len(images),
                                       len(images) - len(absent),
                                       sum(i in failed for i in absent),
                                       sum(i in sources.rois and i not in failed for i in absent))
    if sources.probes is not None:
        absent = [rid for t in tables if t.probe is not None
                  for rid in t.review_ids[t.probe[:, 0] < 0]]
        failed = _listed_failures(sources.probes.folder)
        needed = sum(len(t) for t in tables)
        result["probes"] = StoreCoverage("probes", str(sources.probes.folder), "reviews",
                                         needed, needed - len(absent),
                                         sum(rid in failed for rid in absent))
    return result


TRAIN_ALLOWS = "--allow-partial (config data.allow_partial: true)"


def require_full_coverage(coverage: Mapping[str, StoreCoverage], allow_partial: bool,
                          how_to_allow: str = TRAIN_ALLOWS) -> None:
    """Refuse a store that misses items its stage did not list as failed; the refusal names
    `how_to_allow` (the option that accepts partial stores)."""
    partial = [c for c in coverage.values() if c.missing]
    if not partial or allow_partial:
        return
    first = partial[0]
    lines = "; ".join(f"{c.store} store covers {c.describe()}" for c in partial)
    cause = ("an image stored with no region gives the model nothing to read"
             if first.empty == first.missing else
             "a store made from other data (or only part of it) would feed the model zeros, "
             "or fewer reviews")
    fix = (f"re-run {WHAT_WRITES[first.store]} --force on this manifest (with weights that "
           f"give regions)" if first.empty else
           f"run {WHAT_WRITES[first.store]} on this manifest")
    raise InputError(
        f"{lines}: {cause}", file=first.path, field=first.store,
        hint=f"{fix}, or pass {how_to_allow} to use what the stores cover")


def coverage_summary(coverage: Mapping[str, StoreCoverage]) -> dict[str, dict]:
    """JSON-ready coverage per store, for the run's MANIFEST.json counts."""
    return {name: {**c.as_dict(), "share": round(c.covered / c.needed, 6) if c.needed else 1.0}
            for name, c in coverage.items()}
