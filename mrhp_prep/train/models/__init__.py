"""The ranking models, registered by name.

Each entry maps a model name to "module:Class"; the class takes `(config, inputs)`, where
`config` is the `model:` section of the resolved training config and `inputs` a
`base.ModelInputs`. Its settings (with the paper's hyperparameters as defaults) are declared
in `settings/model_settings.py`, its presets and protocols in `mrhp_prep/configs/<name>.yaml`.
Modules are imported only when a model is built.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Mapping

from ...errors import InputError

MODELS: dict[str, str] = {
    "sancl": "mrhp_prep.train.models.sancl:SANCL",
    "mcl": "mrhp_prep.train.models.mcl:MclModel",
    "mmss": "mrhp_prep.train.models.mmss:MmssModel",
}

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def model_class(name: str):
    """The class registered under `name`."""
    target = MODELS.get(name)
    if target is None:
        raise InputError(f"unknown model '{name}'", field="model",
                         hint=f"choose one of: {', '.join(sorted(MODELS))}")
    module_name, attribute = target.split(":")
    return getattr(importlib.import_module(module_name), attribute)


def default_config_path(name: str) -> Path:
    """`mrhp_prep/configs/<name>.yaml`: the model's presets and protocols."""
    model_class(name)  # unknown names fail with the list of known ones
    return CONFIG_DIR / f"{name}.yaml"


def build_model(name: str, config: Mapping, inputs):
    """Instantiate model `name` from its config section and the data's `ModelInputs`
    (for an ids store, with the text encoders of `text_encoder.py` built first)."""
    import dataclasses

    from .text_encoder import ENCODER_KEYS, build_text_encoders

    cls = model_class(name)
    if inputs.text_mode == "ids" and inputs.text_encoders is None:
        encoders = build_text_encoders(config, inputs.text_model)
        inputs = dataclasses.replace(inputs, text_encoders=encoders,
                                     text_dim=encoders["review"].dim)
    # the encoder's keys are read above, not by the model
    return cls({k: v for k, v in config.items() if k not in ENCODER_KEYS}, inputs)
