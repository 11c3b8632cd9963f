"""Sentence-level precision and recall of the masks against labels written for the project."""

from __future__ import annotations

import pytest

from probe_helpers import labelled, mask_rows, precision_recall, predicted_labels


def test_labelled_sets_are_large_and_varied():
    english = labelled("en")
    assert len([i for i in english if not i["id"].startswith("paper-")]) >= 50
    assert {"paper-figure2", "paper-table3"} <= {i["id"] for i in english}
    # some reviews never mention the product; some sentences of every other kind
    assert sum(not any(i["labels"]) for i in english) >= 3
    assert len({i["product"] for i in english}) == len(english)


@pytest.mark.parametrize("language, rule, floor_p, floor_r", [
    ("en", "paper", 0.90, 0.84),
    ("en", "sancl-code", 0.88, 0.85),
    ("id", "paper", 0.90, 0.90),
])
def test_precision_recall_floor(language, rule, floor_p, floor_r):
    precision, recall, sentences = precision_recall(language, rule)
    print(f"{language} {rule}: precision {precision:.3f} recall {recall:.3f} "
          f"over {sentences} sentences")
    assert precision >= floor_p
    assert recall >= floor_r


def test_paper_worked_examples():
    items = {i["id"]: i for i in labelled("en")}
    table3, figure2 = items["paper-table3"], items["paper-figure2"]
    rows = mask_rows("en", "paper", [table3, figure2])
    # Table 3: only the first sentence holds the coreference cluster ("these", "they").
    assert predicted_labels(rows[0], table3["sentences"]) == [True, False]
    assert rows[0]["rule"] == "coref"
    mentions = [table3["text"][s:e] for s, e in zip(rows[0]["mention_start"],
                                                    rows[0]["mention_end"])]
    assert mentions == ["these", "they"]
    # Figure 2: the first sentence is 0, "It was poor quality" (the cluster [it, set]) is 1.
    figure = predicted_labels(rows[1], figure2["sentences"])
    assert figure[:2] == [False, True]
    assert "set" in rows[1]["core_words"]
