"""The three papers' own results (`paper_results.yaml`, copied by hand from their tables)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from ...errors import InputError

RESULTS_FILE = Path(__file__).with_name("paper_results.yaml")
PAPERS = ("sancl", "mcl", "mmss")
PAPER_METRICS = ("map", "ndcg@3", "ndcg@5")
KEYS = ("paper", "table", "dataset", "category", "setting", "text", "variant")
# How each paper's own figures were selected, where its released code shows it: MCL's
# trainer validates on the test split (`validloader = dataloader['test']`), so its best
# epochs, and the figures in its tables, were chosen on the test set.
PAPER_SELECTION = {"mcl": "model selected on the test set (released code)"}


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


MMSS_SUBTASK_VARIANTS = {"ptrt": "w/o intra-modal p_t r_t", "pvrv": "w/o intra-modal p_v r_v",
                         "ptrv": "w/o inter-modal p_t r_v", "pvrt": "w/o inter-modal p_v r_t",
                         "rtrv": "w/o intra-review r_t r_v"}


def variant_of(config: dict, has_probes: bool) -> str | None:
    """The name a paper's ablation table gives a run's model, "full" for the paper's model,
    None for a configuration no paper reports. `config` is the run's resolved config."""
    model = config["model"]
    name = model["name"]
    if name == "sancl":
        if model.get("contrastive_reduction", "sum") != "sum":
            return None          # eq. 11-12 sum over the positives; the mean is not the paper's
        removed = []
        if not has_probes:
            removed.append("w/o probe mask")
        elif model.get("probe_beta") not in (None, "learned"):
            removed.append("w/o learned β (fixed at 0.5)" if float(model["probe_beta"]) == 0.5
                           else "other β")
        if float(model.get("kappa", 1)) == 0:
            removed.append("w/o cpc_ii and cpc_pr")
    elif name == "mcl":
        removed = [label for key, label in (("adaptive_weighting", "w/o Adaptive Weighting"),
                                            ("contrastive", "w/o Contrastive Objective"),
                                            ("cross_modal_interaction", "w/o Cross-modal Module"))
                   if model.get(key) is False]
    elif name == "mmss":
        subtasks = set(model.get("subtasks", MMSS_SUBTASK_VARIANTS))
        if model.get("interaction_modeling") is False:
            removed = ["w/o module (b)"]
        elif not subtasks:
            removed = ["w/o module (d)"]
        else:
            removed = [MMSS_SUBTASK_VARIANTS[s] for s in MMSS_SUBTASK_VARIANTS
                       if s not in subtasks]
    else:
        return None
    if not removed:
        return "full"
    return removed[0] if len(removed) == 1 else None
