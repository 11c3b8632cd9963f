"""What metrics.json records so that each number can be traced to what made it, written as
strict JSON (a NaN or infinity is an error naming its key, never a `NaN` token)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ... import __version__
from ...atomic import write_json_atomic
from ..settings.config import fingerprint_settings


def run_record(config: Mapping, run, model=None) -> dict:
    """seed, package version, the run's and its input stores' fingerprints, the effective
    config (`run` is the StageRun of the training folder) and, for a `model` that fine-tunes
    text encoders, the base model each started from with the hash of its weights as loaded
    (the text store's fingerprint names the model, not the weights read at training time)."""
    record = {"seed": int(config["train"]["seed"]), "package_version": __version__,
              "fingerprint": run.fingerprint, "input_fingerprints": dict(run.inputs),
              "config": fingerprint_settings(config)}
    if model is not None:
        from ..models.text_encoder import FineTunedEncoder

        bases = {name: module.get_extra_state() for name, module in model.named_modules()
                 if isinstance(module, FineTunedEncoder)}
        if bases:
            record["text_encoders"] = bases
    return record


def plain(value: Any, where: str = "") -> Any:
    """`value` with numpy scalars and arrays turned into Python ones; raises ValueError naming
    the key of the first NaN or infinity."""
    if isinstance(value, Mapping):
        return {str(k): plain(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} is {value}: a non-finite number cannot be recorded")
    return value


def write_strict_json(path: str | Path, payload: Mapping) -> None:
    """Write `payload` as indented, strict JSON, atomically; a NaN or infinity is a
    ValueError naming the file and the key."""
    try:
        payload = plain(payload)
    except ValueError as exc:
        raise ValueError(f"{Path(path).name}: {exc}") from None
    write_json_atomic(path, payload, allow_nan=False)
