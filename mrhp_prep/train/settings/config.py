"""Training configs: a model's declared defaults, a protocol, a preset, a YAML file and
KEY=VALUE overrides.

Precedence: the declarations (`model_settings.py`, `training_settings.py`) < protocol < preset
(a column of the paper's hyperparameter tables, `configs/<model>.yaml`) < `--config FILE` <
`--set KEY=VALUE`. Keys are checked against the declarations, so a typo is an error rather
than a setting that silently does nothing, and every value is converted and range-checked by
its setting's declaration. `auto` values that depend on the data are resolved here, and the
resolved config is what the run folder's config.yaml records (and its fingerprint hashes).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, Mapping

from ...errors import InputError
from ...settings_yaml import load_settings
from .catalog import SECTIONS, declared, default_config
from .declaration import Setting
from .presets import (PROTOCOLS, choose_preset, model_presets, model_protocols,
                      protocol_settings, read_yaml)

__all__ = ["PROTOCOLS", "SECTIONS", "flatten", "fingerprint_settings", "model_defaults",
           "model_protocols", "parse_override", "protocol_of", "resolve_config", "validate"]


def model_defaults(name: str) -> tuple[dict, dict]:
    """(defaults, presets) of model `name`: its declared default config and its presets."""
    return default_config(name), model_presets(name)


def protocol_of(config: Mapping) -> str:
    """Which protocol a resolved config follows, read from its settings (not from its label,
    which --set can contradict): `paper`, `released`, or `paper except KEY, ...` /
    `released except KEY, ...` naming the keys of the model's released protocol that do not
    hold the named protocol's value. A key whose default is `auto` (resolved from the data)
    never counts against the paper: MCL's helpful threshold is the released one on Amazon."""
    name = config["model"]["name"]
    released = model_protocols(name).get("released")
    if not released:
        return "paper"
    flat = dict(flatten(config))
    defaults = dict(flatten(default_config(name)))

    def holds_paper(key: str) -> bool:
        return defaults.get(key) == "auto" or flat.get(key) == defaults.get(key)

    off_released = [key for key, value in released.items() if flat.get(key) != value]
    off_paper = [key for key in released if not holds_paper(key)]
    if not off_released:
        return "released"
    if not off_paper:
        return "paper"
    if len(off_released) <= len(off_paper):
        return f"released except {', '.join(off_released)}"
    return f"paper except {', '.join(off_paper)}"


def set_value(config: dict, settings: Mapping[str, Setting], dotted: str, value: Any,
              where: str) -> None:
    """Set `a.b` = value in config, read by its declaration in `settings` (dotted key ->
    Setting); keys the config does not have are refused, naming the known ones."""
    keys = dotted.split(".")
    node = config
    for depth, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "none"
            raise InputError(f"unknown setting '{dotted}'", row=where, field=dotted,
                             hint=f"known keys at '{'.'.join(keys[:depth]) or 'top'}': {known}")
        if depth == len(keys) - 1:
            if isinstance(node[key], dict):
                raise InputError(f"'{dotted}' is a section; set one of its keys", row=where,
                                 field=dotted, hint=f"keys: {', '.join(node[key])}")
            node[key] = settings[dotted].read(dotted, value, where)
        else:
            node = node[key]


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=5e-5' -> ('train.lr', '5e-5'): the value is read as YAML; `set_value` then
    converts it as the setting's declaration says."""
    if "=" not in text:
        raise InputError(f"override '{text}' is not KEY=VALUE", field="--set",
                         hint="e.g. --set train.epochs=5")
    key, raw = text.split("=", 1)
    value = load_settings(raw, f"--set {key.strip()}") if raw.strip() else ""
    return key.strip(), value


def resolve_config(model: str, *, config_file: str | Path | None = None, preset: str = "auto",
                   overrides: Iterable[str] = (), text_mode: str | None = None,
                   category: str | None = None, relevance_threshold: float = 1,
                   protocol: str = "paper") -> dict:
    """The full training config of one run, every `auto` resolved."""
    config, settings = default_config(model), declared(model)
    for dotted, value in protocol_settings(model, protocol).items():
        set_value(config, settings, dotted, value, f"protocol {protocol}")
    presets = model_presets(model)
    chosen = choose_preset(preset, presets, text_mode, category)
    if chosen:
        for dotted, value in presets[chosen].items():
            set_value(config, settings, dotted, value, f"preset {chosen}")
    if config_file:
        loaded = read_yaml(Path(config_file))
        for key in ("presets", "inputs", "preset", "protocol"):    # a run's config.yaml too
            loaded.pop(key, None)
        for dotted, value in flatten(loaded):
            set_value(config, settings, dotted, value, str(config_file))
    for text in overrides:
        dotted, value = parse_override(text)
        set_value(config, settings, dotted, value, "--set")
    if config["model"]["name"] != model:
        raise InputError(f"the config is for model '{config['model']['name']}', not '{model}'",
                         field="model.name", hint="pass --model with the config's model")
    if config["model"].get("relevance_threshold") == "auto":
        config["model"]["relevance_threshold"] = relevance_threshold
    if config["loss"]["margin"] == "auto":
        config["loss"]["margin"] = "label-gap" if config["sampling"]["scheme"] == "groups" \
            else 1.0
    config["preset"] = chosen or "none"
    config["protocol"] = protocol
    _resolve_text_encoder(config["model"], text_mode)
    validate(config)
    return config


def _resolve_text_encoder(model: dict, text_mode: str | None) -> None:
    """`text_encoder: auto` -> finetune for an ids store, frozen-features otherwise; an
    explicit choice must fit the store's mode. Without a store (yet) `auto` stays."""
    choice = model["text_encoder"]
    if text_mode is None:
        return
    if choice == "auto":
        choice = "finetune" if text_mode == "ids" else "frozen-features"
    if (choice == "finetune") != (text_mode == "ids"):
        need = "--mode ids" if choice == "finetune" else "--mode features or static"
        raise InputError(f"model.text_encoder={choice} does not fit a text store in "
                         f"{text_mode} mode", field="model.text_encoder",
                         hint=f"pass an embed-text output made with {need}, or leave "
                              f"model.text_encoder at auto")
    model["text_encoder"] = choice


def flatten(tree: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    """{"train": {"lr": 1}} -> [("train.lr", 1)]: every leaf with its dotted key."""
    items = []
    for key, value in tree.items():
        if isinstance(value, Mapping):
            items.extend(flatten(value, f"{prefix}{key}."))
        else:
            items.append((f"{prefix}{key}", value))
    return items


def validate(config: Mapping) -> None:
    """Check a resolved config: every section there, and every value one its declaration
    accepts (values set by `auto` included), with the key to fix in the message."""
    for section in SECTIONS:
        if section not in config:
            raise InputError(f"the config has no '{section}' section", field=section)
    if config.get("protocol", "paper") not in PROTOCOLS:
        raise InputError(f"protocol must be one of {', '.join(PROTOCOLS)}", field="protocol")
    settings = declared(config["model"]["name"])
    for section in SECTIONS:
        for key, value in config[section].items():
            dotted = f"{section}.{key}"
            if dotted not in settings:
                raise InputError(f"unknown setting '{dotted}'", field=dotted,
                                 hint="see docs/settings.md for the keys of each model")
            settings[dotted].read(dotted, value, "the resolved config")


def fingerprint_settings(config: Mapping) -> dict:
    """What identifies a run's results (everything but where the inputs live)."""
    return {k: copy.deepcopy(v) for k, v in config.items() if k != "inputs"}
