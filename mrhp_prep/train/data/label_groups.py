"""Whether the train split's labels give the ranking loss anything to compare.

The loss compares reviews of one product whose labels differ (by `sampling.min_label_gap`
for the `groups` scheme, by 1 for `pairs`). When no train product has such a pair, there is
nothing to train on: the run is refused before its folder is made, naming the label scheme
the manifest was ingested with and what would give pairs instead: the other scheme(s)
(`ingest --labels`, computed from the manifest's vote counts) or the `pairs` scheme.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...data.ingest import grade_votes
from ...errors import InputError

# label scheme of `ingest --labels` -> the label of a review with this many votes
SCHEMES = {"raw": lambda votes: votes, "graded": grade_votes}


def products_with_pairs(product_ids, labels, gap: int) -> int:
    """How many products have two reviews whose labels differ by at least `gap`."""
    frame = pd.DataFrame({"product": product_ids, "label": labels}).dropna()
    spread = frame.groupby("product", sort=False)["label"].agg(lambda x: x.max() - x.min())
    return int((spread >= gap).sum())


def check_label_pairs(manifest, train_table, sampling) -> None:
    """Refuse a train split (`dataset.SplitTable`) none of whose products has a pair of
    labels `sampling` (`SamplingConfig`) can compare; the hint names what would."""
    gap = sampling.min_label_gap
    if products_with_pairs(train_table.product_ids, train_table.labels, gap):
        return
    used = manifest.info.get("settings", {}).get("labels")
    reviews = manifest.reviews
    kept = reviews[reviews["review_id"].isin(set(train_table.review_ids))]
    options = []
    for scheme, label_of in SCHEMES.items():
        if scheme == used or "upvotes" not in kept:
            continue
        labels = [label_of(int(v)) if pd.notna(v) else None for v in kept["upvotes"]]
        labels = np.array([np.nan if x is None else x for x in labels], dtype=np.float64)
        found = products_with_pairs(kept["product_id"].to_numpy(), labels, gap)
        if found:
            options.append(f"re-ingest with --labels {scheme} ({found} train products would "
                           f"have reviews {gap} or more apart)")
    if sampling.scheme != "pairs" and gap > 1 and products_with_pairs(
            train_table.product_ids, train_table.labels, 1):
        options.append("use --set sampling.scheme=pairs (labels 1 apart)")
    scheme_text = f"--labels {used}" if used else "its label scheme"
    raise InputError(
        f"no train product has two reviews whose labels differ by at least {gap}, so the "
        f"ranking loss has nothing to compare (the manifest was ingested with {scheme_text}; "
        f"labels seen: {', '.join(f'{v:g}' for v in np.unique(train_table.labels)[:10])})",
        file=str(manifest.table_path("reviews")), field="label",
        hint="; or ".join(options) if options else
        "no label scheme gives such pairs here: the train split needs products whose "
        "reviews got different vote counts")
