"""The papers' tables: each model's presets and protocols, in `mrhp_prep/configs/<model>.yaml`.

A preset is a column of a paper's hyperparameter tables (`presets:`, dotted key -> value). A
protocol settles the training choices a paper leaves open: `paper` (the declared defaults:
the paper where it speaks, this project's documented choices where it is silent) or
`released` (every open choice as the model's released code makes it; `protocols:`). A
protocol and a preset set disjoint keys (a preset holds what the paper's tables state, a
protocol only what the paper leaves open), so `--protocol released` stacks on the preset
`--preset auto` picks for the category. Their values are read and checked by the settings'
declarations like any other (`config.set_value`).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Mapping

from ...errors import InputError
from ...settings_yaml import read_settings_file
from ..models import default_config_path

PROTOCOLS = ("paper", "released")


def read_yaml(path: str | Path) -> dict:
    """A YAML file that must hold a mapping (a config file, a model's tables), read by the
    safe settings loader (deep nesting, alias bombs and repeated keys refused)."""
    loaded = read_settings_file(Path(path)) or {}
    if not isinstance(loaded, dict):
        raise InputError("a config must be a mapping of sections", file=str(path))
    return loaded


@functools.lru_cache(maxsize=None)
def _model_tables(name: str) -> dict:
    """`configs/<name>.yaml`, read once per process (it ships with the package)."""
    return read_yaml(default_config_path(name))


def model_presets(name: str) -> dict[str, dict]:
    """Preset name -> its settings (dotted key -> value) for model `name` (a fresh copy)."""
    return copy.deepcopy(_model_tables(name).get("presets") or {})


def model_protocols(name: str) -> dict[str, dict]:
    """Protocol name -> its settings (dotted key -> value) for model `name`; `paper` is {}."""
    protocols = copy.deepcopy(_model_tables(name).get("protocols") or {})
    return {"paper": {}, **protocols}


def protocol_settings(model: str, protocol: str) -> dict:
    """The settings of `protocol` for `model`, or an InputError naming what exists."""
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol '{protocol}'", field="--protocol",
                         hint=f"choose one of: {', '.join(PROTOCOLS)}")
    protocols = model_protocols(model)
    if protocol not in protocols:
        raise InputError(f"model '{model}' has no '{protocol}' protocol", field="--protocol",
                         hint="its paper has no released code to follow: use --protocol paper "
                              "(see docs/fidelity.md)")
    return protocols[protocol]


def choose_preset(requested: str, presets: Mapping, text_mode: str | None,
                  category: str | None) -> str | None:
    """`auto` -> glove-<category> / bert-<category> when the model has it; `none` -> None."""
    if requested == "none":
        return None
    if requested == "auto":
        family = "bert" if text_mode in {"features", "ids"} else "glove"
        name = f"{family}-{category}"
        return name if name in presets else None
    if requested not in presets:
        raise InputError(f"unknown preset '{requested}'", field="--preset",
                         hint=f"choose auto, none or one of: {', '.join(presets) or '(none)'}")
    return requested
