"""`train --dry-run`: the config a training command resolves and the model it builds, with
nothing written.

The stores are opened and checked as for training and the model is built from them (so a
fine-tuned text encoder is loaded), but no run folder, cache entry or checkpoint is made. The
text is the effective config (YAML, input folders under `inputs:`) followed by the parameter
table that every run folder keeps as `model.txt` (`report/parameters.py`); its last line
starts with `total without embedding tables`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import yaml

from ..data.manifest import Manifest
from ..errors import InputError
from .data.dataset import FeatureSources
from .models import build_model
from .report.parameters import parameter_table
from .settings.config import protocol_of, resolve_config


def _absolute(path: str | Path | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def describe(config: dict, inputs: dict, model) -> str:
    """The effective config and the parameter table of `model`, as printed by --dry-run."""
    architecture = config["model"].get("architecture", "paper")
    lines = ["# effective config", yaml.safe_dump({**config, "inputs": inputs}, sort_keys=False),
             f"# model {config['model']['name']}: architecture {architecture}, protocol "
             f"{protocol_of(config)}, preset {config.get('preset', 'none')}",
             parameter_table(model)]
    return "\n".join(lines)


def dry_run(*, manifest: str | Path | None = None, rois: str | Path | None = None,
            text: str | Path | None = None, probes: str | Path | None = None,
            model: str = "sancl", config_file: str | Path | None = None, preset: str = "auto",
            protocol: str = "paper", overrides: Iterable[str] = (),
            resume: str | Path | None = None) -> str:
    """Resolve the config and build the model as `run.train` would; returns `describe`'s text.
    With `resume`, the run folder's own config.yaml and inputs."""
    if resume is not None:
        from .run_folder import read_run_config

        config = read_run_config(resume)
        inputs = config.pop("inputs")
        model = config["model"]["name"]
    else:
        if manifest is None:
            raise InputError("--manifest is required (or --resume RUN_DIR)", field="--manifest")
        inputs = {"manifest": _absolute(manifest), "rois": _absolute(rois),
                  "text": _absolute(text), "probes": _absolute(probes)}
        manifest_info = Manifest(inputs["manifest"])
        config = resolve_config(
            model, config_file=config_file, preset=preset, protocol=protocol,
            overrides=overrides,
            text_mode=FeatureSources.peek_text_mode(text) if text else None,
            category=manifest_info.info["settings"].get("category"),
            relevance_threshold=manifest_info.relevance_threshold)
    sources = FeatureSources(inputs["manifest"], rois=inputs["rois"], text=inputs["text"],
                             probes=inputs["probes"])
    built = build_model(model, config["model"], sources.model_inputs())
    return describe(config, inputs, built)
