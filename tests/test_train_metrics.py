"""MRHP metrics against cases worked out by hand (ties, products without relevant reviews)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from mrhp_prep.train.report.metrics import (evaluate_rankings, paired_t_test, paired_test,
                                            product_metrics, rank_within_products)
from mrhp_prep.train.report.predictions import read_predictions
from tolerances import EPS64, sum_rtol

LN = math.log


# The metrics are float64 sums and ratios of a few terms (at most 16 reviews per product here,
# and 12 products), and the hand-written formulas take them in another order: within 16 * eps
# of float64, relative (tolerances.py).
FLOAT64 = sum_rtol(16, eps=EPS64)


def _frame(rows):
    return pd.DataFrame(rows, columns=["product_id", "review_id", "label", "score"])


# Product A: scores tie between a label-0 review (first in input order) and a label-2 review.
# A stable sort keeps the label-0 review first: ranked labels 3, 0, 2, 1.
PRODUCT_A = [("A", "A-0", 3, 0.9), ("A", "A-1", 0, 0.8), ("A", "A-2", 2, 0.8), ("A", "A-3", 1, 0.1)]
# Product B: nothing above threshold 1.
PRODUCT_B = [("B", "B-0", 1, 0.2), ("B", "B-1", 0, 0.5), ("B", "B-2", 1, 0.1)]
# Product C: the only relevant review ranked second.
PRODUCT_C = [("C", "C-0", 0, 5.0), ("C", "C-1", 2, 1.0)]


def test_product_with_tie_keeps_input_order():
    labels = np.array([3, 0, 2, 1])
    scores = np.array([0.9, 0.8, 0.8, 0.1])
    got = product_metrics(labels, scores, threshold=1)
    # relevant at ranks 1 and 3: AP = (1/1 + 2/3) / 2
    assert got["map"] == pytest.approx((1 + 2 / 3) / 2, rel=FLOAT64)
    assert got["mrr"] == pytest.approx(1.0, rel=FLOAT64)
    dcg = 7 / LN(2) + 0 + 3 / LN(4)          # labels 3, 0, 2 in the top 3
    ideal = 7 / LN(2) + 3 / LN(3)            # labels 3, 2, (1 is not > 1)
    assert got["ndcg@3"] == pytest.approx(dcg / ideal, rel=FLOAT64)
    assert got["ndcg@5"] == pytest.approx(dcg / ideal, rel=FLOAT64)
    # The same scores with the tie broken the other way would rank label 2 second.
    swapped = product_metrics(labels[[0, 2, 1, 3]], scores[[0, 2, 1, 3]], threshold=1)
    assert swapped["map"] == pytest.approx(1.0, rel=FLOAT64)


def test_no_relevant_product_counts_as_zero_in_the_average():
    report = evaluate_rankings(_frame(PRODUCT_A + PRODUCT_B + PRODUCT_C), threshold=1)
    per = report.per_product.set_index("product_id")
    assert per.loc["B", ["map", "ndcg@3", "ndcg@5", "mrr"]].tolist() == [0, 0, 0, 0]
    assert per.loc["C", "map"] == pytest.approx(0.5, rel=FLOAT64)
    assert per.loc["C", "mrr"] == pytest.approx(0.5, rel=FLOAT64)
    assert per.loc["C", "ndcg@3"] == pytest.approx((3 / LN(3)) / (3 / LN(2)), rel=FLOAT64)
    summary = report.summary()
    assert summary["map"] == pytest.approx(((1 + 2 / 3) / 2 + 0 + 0.5) / 3, rel=FLOAT64)
    assert summary["products"] == 3
    assert summary["reviews"] == 9
    assert summary["products_without_relevant"] == 1


def test_lazada_threshold_zero_makes_label_one_relevant():
    got = product_metrics(np.array([1, 0, 1]), np.array([0.2, 0.5, 0.1]), threshold=0)
    # ranked labels 0, 1, 1 -> relevant at ranks 2 and 3
    assert got["map"] == pytest.approx((1 / 2 + 2 / 3) / 2, rel=FLOAT64)
    assert got["mrr"] == pytest.approx(0.5, rel=FLOAT64)
    assert got["ndcg@3"] == pytest.approx((1 / LN(3) + 1 / LN(4)) / (1 / LN(2) + 1 / LN(3)),
                                          rel=FLOAT64)


def test_ndcg_cut_at_three_and_five():
    labels = np.array([0, 0, 0, 4, 3, 2])
    scores = np.array([6, 5, 4, 3, 2, 1], dtype=float)
    got = product_metrics(labels, scores, threshold=1)
    ideal3 = 15 / LN(2) + 7 / LN(3) + 3 / LN(4)
    assert got["ndcg@3"] == 0.0
    assert got["ndcg@5"] == pytest.approx((15 / LN(5) + 7 / LN(6)) / (ideal3), rel=FLOAT64)
    # the discount's log base cancels: the same figure with log2
    log2 = math.log2
    assert got["ndcg@5"] == pytest.approx((15 / log2(5) + 7 / log2(6))
                                          / (15 / log2(2) + 7 / log2(3) + 3 / log2(4)),
                                          rel=FLOAT64)


def test_ranks_within_products_are_stable():
    frame = _frame(PRODUCT_A + PRODUCT_C)
    assert rank_within_products(frame).tolist() == [1, 2, 3, 4, 1, 2]


def test_paired_t_test_matches_the_formula():
    rng = np.random.default_rng(0)
    rows_a, rows_b = [], []
    for p in range(12):
        labels = rng.integers(0, 5, size=6)
        for r, label in enumerate(labels):
            rows_a.append((f"P{p}", f"P{p}-{r}", label, label + rng.normal()))
            rows_b.append((f"P{p}", f"P{p}-{r}", label, rng.normal()))
    a = evaluate_rankings(_frame(rows_a), 1)
    b = evaluate_rankings(_frame(rows_b), 1)
    test = paired_t_test(a, b)
    d = a.per_product["map"].to_numpy() - b.per_product["map"].to_numpy()
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    assert test["map"]["t"] == pytest.approx(t, rel=FLOAT64)
    assert test["map"]["products"] == 12
    assert 0 <= test["map"]["p"] < 0.05   # scores that follow the label beat noise


def test_paired_test_without_variance_gives_no_p_value():
    """Every difference equal (a constant shift): scipy's t is infinite and its p 0, which
    would read as significance; the test reports no t and no p instead."""
    shifted = paired_test([0.5, 0.6, 0.7], [0.4, 0.5, 0.6])
    assert shifted["t"] is None and shifted["p"] is None and shifted["n"] == 3
    assert shifted["mean_difference"] == pytest.approx(0.1, rel=FLOAT64)
    assert paired_test([0.5], [0.1])["p"] is None                  # one pair


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
def test_evaluate_command_reads_every_format(tmp_path, runner, suffix):
    from mrhp_prep.cli import cli

    frame = _frame(PRODUCT_A + PRODUCT_B + PRODUCT_C)
    path = tmp_path / f"predictions.{suffix}"
    if suffix == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    result = runner.invoke(cli, ["evaluate", str(path)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["map"] == pytest.approx(((1 + 2 / 3) / 2 + 0 + 0.5) / 3, rel=FLOAT64)
    assert metrics["products"] == 3
    lazada = json.loads(runner.invoke(cli, ["evaluate", str(path), "--threshold", "0"]).stdout)
    assert lazada["products_without_relevant"] == 0


def test_evaluate_compare_and_bad_file(tmp_path, runner):
    from mrhp_prep.cli import cli

    frame = _frame(PRODUCT_A + PRODUCT_B + PRODUCT_C)
    good = frame.assign(score=frame["label"])      # ranks every product perfectly
    worse = frame.assign(score=-frame["label"])    # ranks every product backwards
    good.to_json(tmp_path / "a.jsonl", orient="records", lines=True)
    worse.to_json(tmp_path / "b.jsonl", orient="records", lines=True)
    result = runner.invoke(cli, ["evaluate", str(tmp_path / "a.jsonl"),
                                 "--compare", str(tmp_path / "b.jsonl")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    # A and C perfect, B has nothing relevant
    assert out["a"]["map"] == pytest.approx(2 / 3, rel=FLOAT64)
    assert out["a"]["map"] > out["b"]["map"]
    assert out["t_test"]["map"]["products"] == 3
    assert out["t_test"]["map"]["mean_difference"] > 0

    good.drop(columns=["score"]).to_csv(tmp_path / "bad.csv", index=False)
    result = runner.invoke(cli, ["evaluate", str(tmp_path / "bad.csv")])
    assert result.exit_code == 3
    assert "score" in result.output
    assert read_predictions(tmp_path / "a.jsonl")["product_id"].tolist()[0] == "A"
