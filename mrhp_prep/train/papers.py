"""The three papers' own results (`paper_results.yaml`, copied by hand from their tables)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from ..errors import InputError

RESULTS_FILE = Path(__file__).with_name("paper_results.yaml")
PAPERS = ("sancl", "mcl", "mmss")
PAPER_METRICS = ("map", "ndcg@3", "ndcg@5")
KEYS = ("paper", "table", "dataset", "category", "setting", "text", "variant")


@lru_cache(maxsize=1)
def paper_results() -> dict:
    """{"papers": {name: notes}, "results": [one dict per row of a table]}."""
    data = yaml.safe_load(RESULTS_FILE.read_text(encoding="utf-8"))
    for number, row in enumerate(data["results"]):
        missing = [k for k in (*KEYS, *PAPER_METRICS) if row.get(k) is None]
        if missing:
            raise InputError(f"result {number} lacks {', '.join(missing)}", file=str(RESULTS_FILE))
    return data


def paper_row(paper: str, *, dataset: str | None, category: str | None, setting: str,
              text: str | None, variant: str = "full") -> dict | None:
    """The paper's figures for one configuration of its model (its main results table first),
    or None when the paper does not report it."""
    if paper not in PAPERS:
        raise InputError(f"unknown paper '{paper}'", field="--paper",
                         hint=f"choose one of {', '.join(PAPERS)}")
    for row in paper_results()["results"]:
        if (row["paper"], row["dataset"], row["category"], row["setting"], row["text"],
                row["variant"]) == (paper, dataset, category, setting, text, variant):
            return row
    return None
