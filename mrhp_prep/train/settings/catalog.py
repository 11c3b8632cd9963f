"""Every model's declared settings, section by section, and the default config made of them.

`declared(model)` maps each dotted key ("train.lr") to its `Setting`; `default_config(model)`
is the nested dict a run starts from, its keys in declaration order (the order a run's
config.yaml lists them).
"""

from __future__ import annotations

from typing import Any

from ...errors import InputError
from .declaration import Setting
from .model_settings import MODEL_SECTIONS
from .training_settings import RUN_SECTIONS

SECTIONS = ("model", *RUN_SECTIONS)
MODEL_NAMES = tuple(MODEL_SECTIONS)


def sections_of(model: str) -> dict[str, tuple[Setting, ...]]:
    """Section name -> the settings `model` has in it, in order."""
    if model not in MODEL_SECTIONS:
        raise InputError(f"unknown model '{model}'", field="model",
                         hint=f"choose one of: {', '.join(sorted(MODEL_SECTIONS))}")
    return {"model": MODEL_SECTIONS[model], **RUN_SECTIONS}


def declared(model: str) -> dict[str, Setting]:
    """Dotted key -> its declaration, for every setting of `model`."""
    return {f"{section}.{setting.key}": setting
            for section, settings in sections_of(model).items() for setting in settings}


def default_config(model: str) -> dict[str, dict[str, Any]]:
    """{section: {key: default}} of `model`, a fresh copy."""
    return {section: {setting.key: setting.default_for(model) for setting in settings}
            for section, settings in sections_of(model).items()}
