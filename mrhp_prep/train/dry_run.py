"""`train --dry-run`: the config a training command resolves and the model it builds, with
nothing written.

The settings are resolved, the stores opened and checked and the model built and checked by
the same functions `train` runs before its folder exists (`prepare.prepare_run`: so a fine-tuned
text encoder is loaded, and what `train` refuses, `--dry-run` refuses), but no run folder,
cache entry or checkpoint is made. The text is the effective config (YAML, input folders
under `inputs:`) followed by the parameter table that every run folder keeps as `model.txt`
(`report/parameters.py`); its last line starts with `total without embedding tables`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import yaml

from .report.parameters import parameter_table
from .settings.config import protocol_of


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
    """Resolve the config, open and check the stores and build the model with the very
    function `run.train` starts with (`prepare.prepare_run`); returns `describe`'s text. With
    `resume`, the run folder's own config.yaml and inputs, refused as `train --resume` would
    refuse them."""
    from .prepare import prepare_run

    prepared = prepare_run(manifest=manifest, rois=rois, text=text, probes=probes, model=model,
                           config_file=config_file, preset=preset, protocol=protocol,
                           overrides=overrides, resume=resume)
    return describe(prepared.config, prepared.inputs, prepared.model)
