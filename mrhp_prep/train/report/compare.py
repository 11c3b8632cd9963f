"""Runs that differ only by their seed, grouped, summarised and tested against each other.

A group is every finished run with the same config but for `train.seed`, on the same input
stores (by fingerprint) and, for a fine-tuned text encoder, from the same base weights. Per
group: the mean and sample standard deviation over its seeds of MAP, NDCG@3 and NDCG@5.
Between two groups, per metric:
- a paired t-test over products: each product's metric is first averaged over the group's
  seeds, then the two groups are paired on the products both ranked;
- a paired t-test over seeds, when both groups have at least three seeds in common (run i of
  one group is paired with the run of the same seed in the other).
Marks: "*" p < 0.05, "**" p < 0.01 (SANCL marks p < 0.05, MM-SS p < 0.01).
Groups made on different manifests (another category, another label scheme, a re-ingest) are
kept apart: their products are other items or carry other labels, so they are never paired.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ...cache import MANIFEST_NAME, MARKER_NAME, read_manifest
from ...errors import InputError
from .metrics import RankingReport, evaluate_rankings
from .predictions import read_predictions
from .metrics import paired_test as t_test
from .papers import PAPER_METRICS, variant_of
from ..settings.config import flatten, protocol_of
from ..run_folder import CONFIG_NAME, predictions_path, read_run_config, read_run_metrics

SPLITS = ("dev", "test")
MIN_SEEDS_FOR_SEED_TEST = 3


@dataclass
class Run:
    path: Path
    seed: int
    settings: dict            # the flattened config without train.seed, plus input fingerprints
    report: RankingReport     # per-product metrics of the chosen split
    describe: dict            # model, dataset, category, setting, text (for the papers' rows)
    config: dict = field(default_factory=dict)     # config.yaml as read, `inputs:` included
    metrics: dict = field(default_factory=dict)    # metrics.json ({} when the run has none)
    predictions: pd.DataFrame | None = None        # the chosen split's predictions file


@dataclass
class Group:
    name: str
    runs: list[Run]
    settings: dict
    per_seed: pd.DataFrame = field(init=False)      # seed x metric (means over products)
    per_product: pd.DataFrame = field(init=False)   # product_id x metric (means over seeds)

    def __post_init__(self):
        self.runs.sort(key=lambda r: r.seed)
        self.per_seed = pd.DataFrame([{"seed": r.seed, **r.report.mean} for r in self.runs]
                                     ).set_index("seed")[list(PAPER_METRICS)]
        frames = [r.report.per_product.set_index("product_id")[list(PAPER_METRICS)]
                  for r in self.runs]
        common = frames[0].index
        for frame in frames[1:]:
            common = common.intersection(frame.index)
        self.per_product = sum(f.loc[common] for f in frames) / len(frames)

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    def mean_std(self, metric: str) -> tuple[float, float | None]:
        """Mean over seeds and sample standard deviation (None for a single seed)."""
        values = self.per_seed[metric].to_numpy(dtype=np.float64)
        return float(values.mean()), (float(values.std(ddof=1)) if len(values) > 1 else None)


# --------------------------------------------------------------------------- finding runs


def find_runs(paths: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """(finished training run folders, unfinished ones) under the given runs or folders."""
    finished, unfinished = [], []
    for path in map(Path, paths):
        candidates = [path] if (path / CONFIG_NAME).is_file() else sorted(
            p.parent for p in path.rglob(CONFIG_NAME))
        for run in candidates:
            if (run / MANIFEST_NAME).is_file():
                if read_manifest(run).get("stage") == "train":
                    finished.append(run)
            elif (run / MARKER_NAME).is_file():
                unfinished.append(run)
    unique = list(dict.fromkeys(p.resolve() for p in finished))
    if not unique:
        raise InputError("no finished training run found in " + ", ".join(map(str, paths)),
                         hint="pass run folders printed by 'mrhp-prep train', or folders "
                              "that hold them")
    return unique, unfinished


def _describe(config: dict, inputs: dict) -> dict:
    """model, dataset, category, setting, text mode and the papers' name of its variant
    (None where unknown)."""
    from ...data.manifest import Manifest
    from ..data.stores import text_mode

    dataset = category = text = None
    try:
        manifest = Manifest(inputs["manifest"])
        dataset, category = manifest.dataset, manifest.info["settings"].get("category")
    except (InputError, OSError, KeyError, TypeError):
        pass
    try:
        mode = text_mode(inputs["text"]) if inputs.get("text") else None
        # the papers' BERT rows fine-tuned it (ids stores); frozen features match no row
        text = {"static": "static", "ids": "bert", "features": "bert-frozen"}.get(mode)
    except (InputError, OSError, KeyError):    # the store is gone: the config still tells
        family = str(config.get("preset", "")).split("-")[0]
        text = ("bert" if config["model"].get("text_encoder") == "finetune" else
                {"glove": "static", "bert": "bert-frozen"}.get(family))
    return {"model": config["model"]["name"], "dataset": dataset, "category": category,
            "setting": "multimodal" if inputs.get("rois") else "text-only", "text": text,
            "variant": variant_of(config, bool(inputs.get("probes"))),
            "architecture": config["model"].get("architecture", "paper"),
            "protocol": _protocol(config)}


def _protocol(config: dict) -> str:
    """The run's protocol read from its settings (an older config lacks some keys: 'paper')."""
    try:
        return protocol_of(config)
    except (KeyError, InputError):
        return str(config.get("protocol", "paper"))


def load_run(path: Path, split: str) -> Run:
    """One finished run: its seed, settings and the per-product metrics of `split`."""
    as_read = read_run_config(path, complete=True)
    config = copy.deepcopy(as_read)
    inputs = config.pop("inputs")
    seed = config["train"].pop("seed", None)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"train.seed is {seed!r}, not a whole number", field="train.seed",
                         file=str(path / CONFIG_NAME), hint="pass the folder that 'mrhp-prep "
                                                           "train' printed")
    fingerprints = read_manifest(path).get("inputs", {})
    metrics = read_run_metrics(path)
    threshold = metrics.get("relevance_threshold", config["model"].get("relevance_threshold"))
    if threshold is None:
        raise InputError("the run records no relevance threshold", file=str(path))
    predictions = predictions_path(path, split)
    if not predictions.is_file():
        raise InputError(f"no {predictions.name}: the run has no {split} split", file=str(path),
                         hint="choose the other --split (dev or test)")
    frame = read_predictions(predictions)
    report = evaluate_rankings(frame, float(threshold))
    if report.per_product.empty:
        raise InputError(f"{predictions.name} ranks no product", file=str(predictions))
    settings = {**dict(flatten(config)), **{f"input.{k}": v for k, v in fingerprints.items()},
                # a fine-tuned encoder's starting weights are an input too (metrics.json)
                **{f"input.encoder {k}": v.get("base_sha256")
                   for k, v in (metrics.get("text_encoders") or {}).items()}}
    return Run(path, seed, settings, report, _describe(config, inputs), as_read, metrics, frame)


# --------------------------------------------------------------------------- grouping


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Runs with equal settings form a group; a seed twice in a group is an error. Groups are
    named by the model and the settings in which they differ."""
    by_key: dict[str, list[Run]] = {}
    for run in runs:
        by_key.setdefault(json.dumps(run.settings, sort_keys=True, default=str), []).append(run)
    for members in by_key.values():
        seeds = [r.seed for r in members]
        if len(set(seeds)) != len(seeds):
            twice = sorted({s for s in seeds if seeds.count(s) > 1})
            raise InputError(f"seed {twice[0]} appears twice among runs with the same config: "
                             + ", ".join(str(r.path) for r in members if r.seed == twice[0]),
                             hint="pass each run once")
    settings = [members[0].settings for members in by_key.values()]
    keys = sorted({k for s in settings for k in s})
    differing = [k for k in keys if len({json.dumps(s.get(k), default=str) for s in settings}) > 1]
    groups = []
    for members in by_key.values():
        first = members[0].settings
        shown = [f"{k}={first.get(k)}" for k in differing
                 if not k.startswith("input.") and k != "model.name"]
        if any(k.startswith("input.") for k in differing):
            shown.append("inputs " + "/".join(str(first.get(k, "-"))[:6] for k in differing
                                              if k.startswith("input.")))
        name = " ".join([str(first.get("model.name")), *shown])
        groups.append(Group(name, list(members), first))
    return sorted(groups, key=lambda g: g.name)


# --------------------------------------------------------------------------- tests


def significance_mark(p: float | None) -> str:
    if p is None:
        return ""
    return "**" if p < 0.01 else "*" if p < 0.05 else ""


def paired_test(x: np.ndarray, y: np.ndarray) -> dict:
    """`metrics.paired_test` (mean difference, t, p, n) with the significance mark."""
    test = t_test(x, y)
    return {**test, "mark": significance_mark(test["p"])}


def same_manifest(a: Group, b: Group) -> bool:
    """Whether two groups ran on the same manifest (by its fingerprint): only then are their
    products the same items with the same labels, so that pairing them means anything."""
    return a.settings.get("input.manifest") == b.settings.get("input.manifest")


def kept_apart(groups: Sequence[Group]) -> list[tuple[Group, Group]]:
    """The pairs of groups made on different manifests, which `compare_groups` never pairs."""
    return [(a, b) for a, b in combinations(groups, 2) if not same_manifest(a, b)]


def compare_groups(groups: Sequence[Group]) -> pd.DataFrame:
    """One row per (pair of groups on the same manifest, metric, test) with the test's
    numbers."""
    rows = []
    for a, b in combinations(groups, 2):
        if not same_manifest(a, b):
            continue
        common = a.per_product.index.intersection(b.per_product.index)
        seeds = sorted(set(a.seeds) & set(b.seeds))
        for metric in PAPER_METRICS:
            tests = {"products": paired_test(a.per_product.loc[common, metric],
                                              b.per_product.loc[common, metric])}
            if len(seeds) >= MIN_SEEDS_FOR_SEED_TEST:
                tests["seeds"] = paired_test(a.per_seed.loc[seeds, metric],
                                             b.per_seed.loc[seeds, metric])
            for over, test in tests.items():
                rows.append({"group_a": a.name, "group_b": b.name, "metric": metric,
                             "paired_over": over, **test})
    columns = ["group_a", "group_b", "metric", "paired_over", "mean_difference", "t", "p",
               "n", "mark"]
    return pd.DataFrame(rows, columns=columns)
