"""The run folder of `train`: its file names, and the one writer and reader of the files that
belong to no other format.

A run folder (`cache/<dataset>/train/<fingerprint>/` by default, or `--out`) holds:

    .stage.json               the stage's marker while unfinished (cache.py)
    config.yaml               the resolved config, with the input folders under `inputs:`
    input-files.json          the inputs' file digests the run started from
                              (data/input_files.py)
    model.txt                 parameters per submodule, as `train --dry-run` prints them
    checkpoints/              last.pt (resume), best.pt, epoch-NNN.pt (loop/checkpoints.py)
    metrics.json              dev and test metrics of the best epoch, counts, per-epoch history,
                              seed, package version, input fingerprints and config
    predictions-dev.jsonl     product_id, review_id, label, score, rank (report/predictions.py)
    predictions-test.jsonl
    curves.png                losses and dev metrics per epoch
    scores.png                predicted scores per label
    failures.jsonl            reviews left out, one JSON object per line (cache.py)
    MANIFEST.json             written last: the run is finished (cache.py)

This module reads YAML and JSON only (no torch), so `compare` and `report` read runs without
loading the training stack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from ..atomic import atomic_path
from ..errors import InputError
from ..settings_yaml import read_settings_file

CONFIG_NAME = "config.yaml"
MODEL_TABLE_NAME = "model.txt"
METRICS_NAME = "metrics.json"
CHECKPOINTS_DIR = "checkpoints"
CURVES_NAME = "curves.png"
SCORES_NAME = "scores.png"
# the input folders of a run, in the order of the command's options; config.yaml's `inputs:`
INPUT_ROLES = ("manifest", "rois", "text", "probes")
# the sections every run's config.yaml has (a run made by this package always writes them)
_SECTIONS = ("model", "data", "sampling", "loss", "train")
_HINT = "pass the folder that 'mrhp-prep train' printed"


def predictions_path(run_dir: str | Path, split: str) -> Path:
    """`predictions-<split>.jsonl` of the run (written and read by `report/predictions.py`)."""
    return Path(run_dir) / f"predictions-{split}.jsonl"


def predict_output_path(run_dir: str | Path, dataset: str) -> Path:
    """Where `predict` writes by default: `predict-<dataset>.jsonl` in the run folder."""
    return Path(run_dir) / f"predict-{dataset}.jsonl"


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def has_checkpoints(run_dir: str | Path) -> bool:
    """Whether the run wrote a checkpoint (its work can be resumed)."""
    return any(checkpoint_dir(run_dir).glob("*.pt"))


def write_run_config(run_dir: str | Path, config: Mapping, inputs: Mapping) -> None:
    """config.yaml: the resolved config with the input folders (role -> path or None)."""
    import yaml

    with atomic_path(Path(run_dir) / CONFIG_NAME) as tmp:
        tmp.write_text(yaml.safe_dump({**config, "inputs": dict(inputs)}, sort_keys=False))


def read_run_config(run_dir: str | Path, *, complete: bool = False) -> dict:
    """A run's config.yaml, checked: a mapping with `model.name` and `inputs:` naming each
    input role (a folder or null), and with `complete` every section a run writes (to train
    on or predict with it). Anything else is an InputError naming the file."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise InputError(f"no {CONFIG_NAME}: not a training run folder", file=str(run_dir),
                         hint=_HINT)
    config = read_settings_file(path)
    if not isinstance(config, dict):
        raise InputError(f"{CONFIG_NAME} is not a mapping of settings", file=str(path),
                         hint=_HINT)
    needed = (*_SECTIONS, "inputs") if complete else ("model", "inputs")
    missing = [s for s in needed if not isinstance(config.get(s), dict)]
    if missing:
        raise InputError(f"{CONFIG_NAME} has no {', '.join(missing)} section(s)",
                         file=str(path), field=missing[0], hint=_HINT)
    if not isinstance(config["model"].get("name"), str):
        raise InputError(f"{CONFIG_NAME} names no model (model.name)", file=str(path),
                         field="model.name", hint=_HINT)
    inputs = config["inputs"]
    bad = [r for r in INPUT_ROLES
           if r not in inputs or not (inputs[r] is None or isinstance(inputs[r], str))]
    if bad:
        raise InputError(f"{CONFIG_NAME}'s inputs lack a folder (or null) for "
                         f"{', '.join(bad)}", file=str(path), field=f"inputs.{bad[0]}",
                         hint=_HINT)
    return config


def write_model_table(run_dir: str | Path, text: str) -> None:
    """model.txt: the parameter table of the run's model (`report/parameters.py`)."""
    with atomic_path(Path(run_dir) / MODEL_TABLE_NAME) as tmp:
        tmp.write_text(text)


def write_run_metrics(run_dir: str | Path, metrics: Mapping) -> None:
    """metrics.json, strict JSON (a NaN or infinity is a ValueError naming its key)."""
    from .loop.provenance import write_strict_json

    write_strict_json(Path(run_dir) / METRICS_NAME, metrics)


def read_run_metrics(run_dir: str | Path) -> dict:
    """A run's metrics.json ({} when the run has none); a damaged file is an InputError
    naming it."""
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return {}
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{METRICS_NAME} is not JSON: {exc}", file=str(path),
                         hint="the file is damaged: train the run again (--force)") from None
    if not isinstance(metrics, dict):
        raise InputError(f"{METRICS_NAME} does not hold a JSON object", file=str(path),
                         hint="the file is damaged: train the run again (--force)")
    return metrics
