"""What a training command resolves, opens and builds before its run folder exists.

`prepare_run` resolves the settings (of a new run, or of the run `--resume` names), opens the
stores and runs every check that reads them (labels, coverage, label pairs), builds the model
and checks the token ids against it, with nothing written. `train` starts with it, so a
refusal of bad input comes before the folder is made; `train --dry-run` runs the same
function, so it refuses what `train` refuses.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..data.manifest import Manifest
from ..errors import InputError
from .data.checks import check_ids_fit_encoder, check_labels
from .data.coverage import require_full_coverage, store_coverage
from .data.dataset import DataConfig, FeatureSources, ReviewDataset
from .data.label_groups import check_label_pairs
from .data.sampling import SamplingConfig
from .models import build_model
from .run_folder import read_run_config
from .settings.config import flatten, model_defaults, resolve_config


def absolute(path: str | Path | None) -> str | None:
    """The absolute path of an input folder (as config.yaml records it), or None."""
    return str(Path(path).resolve()) if path else None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _require_current_keys(config: dict, run_dir) -> None:
    """Refuse to resume a run whose config.yaml lacks settings the model's defaults now have:
    it was started by an older version, and resuming would train on with today's defaults
    for them (e.g. SANCL's contrastive terms summed where they were averaged)."""
    defaults, _ = model_defaults(config["model"]["name"])
    missing = sorted(set(dict(flatten(defaults))) - set(dict(flatten(config))))
    if missing:
        raise InputError(f"the run was started by an older version: its config.yaml lacks "
                         f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}, so "
                         f"resuming it would mix two trainings", file=str(Path(run_dir)),
                         hint="train it again with its original command, without --resume "
                              "(today's settings give it a new run folder)")


def _settings(*, manifest, rois, text, probes, model, config_file, preset, protocol,
              overrides, resume) -> tuple[dict, dict, str, Manifest]:
    """(config, inputs, model name, manifest) of a new run, or of the run in `resume`."""
    if resume is not None:
        config = read_run_config(resume, complete=True)
        inputs = config.pop("inputs")
        _require_current_keys(config, resume)
        return config, inputs, config["model"]["name"], Manifest(inputs["manifest"])
    if manifest is None:
        raise InputError("--manifest is required (or --resume RUN_DIR)", field="--manifest")
    inputs = {"manifest": absolute(manifest), "rois": absolute(rois),
              "text": absolute(text), "probes": absolute(probes)}
    manifest_info = Manifest(inputs["manifest"])
    text_mode = FeatureSources.peek_text_mode(text) if text else None
    config = resolve_config(model, config_file=config_file, preset=preset, protocol=protocol,
                            overrides=overrides, text_mode=text_mode,
                            category=manifest_info.info["settings"].get("category"),
                            relevance_threshold=manifest_info.relevance_threshold)
    return config, inputs, model, manifest_info


def _open_data(inputs: dict, config: dict) -> tuple[FeatureSources, dict, dict]:
    """The stores joined with the manifest, every check that reads them passed:
    (sources, split name -> ReviewDataset, store coverage)."""
    data_config = DataConfig.from_config(config["data"])
    sources = FeatureSources(inputs["manifest"], rois=inputs["rois"], text=inputs["text"],
                             probes=inputs["probes"])
    splits = {name: ReviewDataset(sources, sources.split(name), data_config)
              for name in ("train", "dev", "test")}
    check_labels(sources, splits)
    coverage = store_coverage(sources, splits)
    require_full_coverage(coverage, data_config.allow_partial)
    check_label_pairs(sources.manifest, splits["train"].table,
                      SamplingConfig.from_config(config["sampling"]))
    return sources, splits, coverage


@dataclass
class PreparedRun:
    """What a training command resolves, opens and builds before its run folder exists."""

    config: dict                 # the resolved config (config.yaml less `inputs:`)
    inputs: dict                 # role -> absolute input folder or None
    manifest: Manifest
    sources: FeatureSources
    splits: dict                 # "train", "dev", "test" -> ReviewDataset
    coverage: dict               # store coverage (`coverage.store_coverage`)
    model: torch.nn.Module       # built, seeded with train.seed


def prepare_run(*, manifest: str | Path | None = None, rois: str | Path | None = None,
                text: str | Path | None = None, probes: str | Path | None = None,
                model: str = "sancl", config_file: str | Path | None = None,
                preset: str = "auto", protocol: str = "paper", overrides: Iterable[str] = (),
                resume: str | Path | None = None) -> PreparedRun:
    """The settings of a new run (or of the run in `resume`), its stores opened and checked
    and its model built and checked against them, with nothing written: a refusal of what the
    settings or the stores hold comes before the run folder is made (only bad values met in
    training come later). `train` and `train --dry-run` both start here."""
    config, inputs, name, manifest_info = _settings(
        manifest=manifest, rois=rois, text=text, probes=probes, model=model,
        config_file=config_file, preset=preset, protocol=protocol, overrides=overrides,
        resume=resume)
    seed_everything(int(config["train"]["seed"]))
    sources, splits, coverage = _open_data(inputs, config)
    built = build_model(name, config["model"], sources.model_inputs())
    check_ids_fit_encoder(sources, built)
    return PreparedRun(config, inputs, manifest_info, sources, splits, coverage, built)
