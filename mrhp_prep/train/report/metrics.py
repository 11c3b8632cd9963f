"""MRHP ranking metrics: MAP, NDCG@3, NDCG@5 and MRR per product, then averaged over products.

The definitions follow the earlier systems exactly, so numbers are comparable with the papers:

- a product's reviews are ranked by predicted score, descending, with a stable sort: reviews
  with equal scores keep their input order;
- a review is relevant when its label is above the threshold (1 for Amazon-MRHP, 0 for
  Lazada-MRHP);
- MAP: average precision over the whole ranked list with that binary relevance;
- NDCG@N: gain 2^label - 1, counted only for relevant reviews, discount log(2 + i) for the
  review at rank i (from 0); the ideal DCG ranks the same labels by label, descending (the
  natural log is used; the base cancels in DCG / ideal DCG);
- MRR: 1 / (1 + rank of the first relevant review);
- a product without a relevant review scores 0 on every metric and stays in the average.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from ...errors import InputError

METRICS = ("map", "ndcg@3", "ndcg@5", "mrr")


def ranking_order(scores: np.ndarray) -> np.ndarray:
    """Positions of `scores` [n] from highest to lowest; equal scores keep their input order."""
    scores = np.asarray(scores, dtype=np.float64)
    return np.argsort(-scores, kind="stable")


def average_precision(ranked_labels: np.ndarray, threshold: float) -> float:
    """AP of labels [n] in ranked order: mean of precision@k over the relevant positions k."""
    relevant = np.asarray(ranked_labels) > threshold
    if not relevant.any():
        return 0.0
    hits = np.cumsum(relevant)
    ranks = np.arange(1, len(relevant) + 1)
    return float(np.sum(hits[relevant] / ranks[relevant]) / hits[-1])


def dcg_at(ranked_labels: np.ndarray, k: int, threshold: float) -> float:
    """DCG of the first k of labels [n] in ranked order: sum over y > threshold of
    (2^y - 1) / ln(2 + i)."""
    total = 0.0
    for i, label in enumerate(np.asarray(ranked_labels, dtype=np.float64)[:k]):
        if label > threshold:
            total += (2.0 ** label - 1.0) / math.log(2.0 + i)
    return total


def ndcg_at(ranked_labels: np.ndarray, k: int, threshold: float) -> float:
    """DCG@k / ideal DCG@k of labels [n] in ranked order; 0 when nothing is relevant."""
    labels = np.asarray(ranked_labels, dtype=np.float64)
    ideal = dcg_at(labels[ranking_order(labels)], k, threshold)
    return dcg_at(labels, k, threshold) / ideal if ideal != 0 else 0.0


def reciprocal_rank(ranked_labels: np.ndarray, threshold: float) -> float:
    """1 / (1-based position of the first relevant label); 0 when nothing is relevant."""
    relevant = np.flatnonzero(np.asarray(ranked_labels) > threshold)
    return 1.0 / (relevant[0] + 1) if len(relevant) else 0.0


def product_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """The four metrics of one product's reviews (`labels`, `scores` [n] in input order)."""
    ranked = np.asarray(labels, dtype=np.float64)[ranking_order(scores)]
    return {"map": average_precision(ranked, threshold),
            "ndcg@3": ndcg_at(ranked, 3, threshold),
            "ndcg@5": ndcg_at(ranked, 5, threshold),
            "mrr": reciprocal_rank(ranked, threshold)}


@dataclass
class RankingReport:
    """Metrics of one set of predictions."""

    per_product: pd.DataFrame   # product_id, the four metrics, reviews, relevant (input order)
    threshold: float

    @property
    def mean(self) -> dict[str, float]:
        if self.per_product.empty:
            return {name: 0.0 for name in METRICS}
        return {name: float(self.per_product[name].mean()) for name in METRICS}

    def summary(self) -> dict:
        """Means plus counts, as written to metrics.json and printed by `evaluate`."""
        frame = self.per_product
        return {**self.mean,
                "products": int(len(frame)),
                "reviews": int(frame["reviews"].sum()) if len(frame) else 0,
                "products_without_relevant": int((frame["relevant"] == 0).sum()),
                "threshold": self.threshold}


def evaluate_rankings(predictions: pd.DataFrame, threshold: float) -> RankingReport:
    """Per-product metrics of a table with product_id, label and score (rows in input order).
    A threshold that is not a finite number is refused (every label would be irrelevant, or
    every one relevant, whatever the ranking)."""
    if not math.isfinite(threshold):
        raise InputError(f"the relevance threshold must be a finite number, not {threshold}",
                         field="threshold", hint="1 for Amazon-MRHP, 0 for Lazada-MRHP")
    rows = []
    for product_id, group in predictions.groupby("product_id", sort=False):
        labels = group["label"].to_numpy(dtype=np.float64)
        scores = group["score"].to_numpy(dtype=np.float64)
        rows.append({"product_id": product_id, **product_metrics(labels, scores, threshold),
                     "reviews": len(group), "relevant": int((labels > threshold).sum())})
    columns = ["product_id", *METRICS, "reviews", "relevant"]
    return RankingReport(pd.DataFrame(rows, columns=columns), float(threshold))


def rank_within_products(predictions: pd.DataFrame) -> np.ndarray:
    """1-based rank of each row within its product (stable for ties), aligned with the rows."""
    ranks = np.zeros(len(predictions), dtype=np.int64)
    scores = predictions["score"].to_numpy()
    for index in predictions.groupby("product_id", sort=False).indices.values():
        ranks[index[ranking_order(scores[index])]] = np.arange(1, len(index) + 1)
    return ranks


def paired_test(x, y) -> dict:
    """scipy's paired t-test of x against y (equal-length arrays): mean difference (x - y), t,
    two-sided p and n; t and p are None when there are fewer than two pairs or every
    difference is the same (no variance: scipy's t would be infinite or undefined)."""
    from scipy import stats

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    difference = x - y
    t = p = None
    if len(x) >= 2 and not np.allclose(difference, difference[0]):
        test = stats.ttest_rel(x, y)
        t, p = _finite(float(test.statistic)), _finite(float(test.pvalue))
        if t is None or p is None:
            t = p = None
    return {"mean_difference": float(difference.mean()) if len(x) else None, "t": t, "p": p,
            "n": int(len(x))}


def require_common_products(a: RankingReport, b: RankingReport, a_name: str,
                            b_name: str) -> None:
    """Refuse to pair two sets of predictions (named `a_name`, `b_name`, e.g. their files)
    that rank no product in common: a paired test over nothing says nothing."""
    common = set(a.per_product["product_id"]) & set(b.per_product["product_id"])
    if not common:
        raise InputError(
            f"{a_name} ({len(a.per_product)} products) and {b_name} "
            f"({len(b.per_product)} products) rank no product in common, so there is nothing "
            f"to pair", file=b_name, field="product_id",
            hint="compare predictions of the same products (the same split of one manifest)")


def paired_t_test(a: RankingReport, b: RankingReport,
                  metrics: Iterable[str] = METRICS) -> dict[str, dict]:
    """Paired t-test (`paired_test`) of two runs' per-product scores over the products both
    ranked. Returns, per metric, the mean difference (a - b), t, the two-sided p and the
    number of products."""
    joined = a.per_product.merge(b.per_product, on="product_id", suffixes=("_a", "_b"))
    result = {}
    for name in metrics:
        test = paired_test(joined[f"{name}_a"], joined[f"{name}_b"])
        result[name] = {"mean_difference": test["mean_difference"] or 0.0, "t": test["t"],
                        "p": test["p"], "products": test["n"]}
    return result


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def metrics_table(summaries: Mapping[str, Mapping]) -> str:
    """A short text table of split -> summary, for logs."""
    lines = [f"{'split':<6} {'products':>8} " + " ".join(f"{m:>7}" for m in METRICS)]
    for split, summary in summaries.items():
        lines.append(f"{split:<6} {summary['products']:>8} "
                     + " ".join(f"{100 * summary[m]:7.2f}" for m in METRICS))
    return "\n".join(lines)
