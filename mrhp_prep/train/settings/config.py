"""Training configs: a model's defaults, a protocol, a preset, a YAML file and KEY=VALUE
overrides.

Precedence: `configs/<model>.yaml` < protocol < preset (a column of the paper's
hyperparameter tables) < `--config FILE` < `--set KEY=VALUE`. Keys are checked against the
defaults, so a typo is an error rather than a setting that silently does nothing. `auto`
values that depend on the data are resolved here, and the resolved config is what the run
folder's config.yaml records.

A protocol settles the training choices a paper leaves open: `paper` (the defaults: the
paper where it speaks, this project's documented choices where it is silent) or `released`
(every open choice as the model's released code makes it; the `protocols:` section of
`configs/<model>.yaml`). A protocol and a preset set disjoint keys (a preset holds what the
paper's tables state, a protocol only what the paper leaves open), so `--protocol released`
stacks on the preset `--preset auto` picks for the category.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, Mapping

from ...errors import InputError
from ...settings_yaml import load_settings, read_settings_file
from ..report.metrics import METRICS
from ..models import default_config_path
from .setting_types import check_range, convert_setting
from ..models.text_encoder import resolve_encoder_settings

SECTIONS = ("model", "data", "sampling", "loss", "train")


def _read_yaml(path: Path) -> dict:
    loaded = read_settings_file(path) or {}
    if not isinstance(loaded, dict):
        raise InputError("a config must be a mapping of sections", file=str(path))
    return loaded


PROTOCOLS = ("paper", "released")


def model_defaults(name: str) -> tuple[dict, dict]:
    """(defaults, presets) of model `name`."""
    defaults = _read_yaml(default_config_path(name))
    presets = defaults.pop("presets", {}) or {}
    defaults.pop("protocols", None)
    return defaults, presets


def model_protocols(name: str) -> dict[str, dict]:
    """Protocol name -> its settings (dotted key -> value) for model `name`; `paper` is {}."""
    protocols = _read_yaml(default_config_path(name)).get("protocols") or {}
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
    defaults = dict(flatten(model_defaults(name)[0]))

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


def set_value(config: dict, dotted: str, value: Any, where: str) -> None:
    """Set `a.b` = value in config, refusing keys the defaults do not have."""
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
            node[key] = convert_setting(dotted, value, node[key], where)
            check_range(dotted, node[key], where)
        else:
            node = node[key]


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=5e-5' -> ('train.lr', '5e-5'): the value is read as YAML; `set_value` then
    converts it to the type of the setting it overrides."""
    if "=" not in text:
        raise InputError(f"override '{text}' is not KEY=VALUE", field="--set",
                         hint="e.g. --set train.epochs=5")
    key, raw = text.split("=", 1)
    value = load_settings(raw, f"--set {key.strip()}") if raw.strip() else ""
    return key.strip(), value


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


def resolve_config(model: str, *, config_file: str | Path | None = None, preset: str = "auto",
                   overrides: Iterable[str] = (), text_mode: str | None = None,
                   category: str | None = None, relevance_threshold: float = 1,
                   protocol: str = "paper") -> dict:
    """The full training config of one run, every `auto` resolved."""
    config, presets = model_defaults(model)
    for dotted, value in protocol_settings(model, protocol).items():
        set_value(config, dotted, value, f"protocol {protocol}")
    chosen = choose_preset(preset, presets, text_mode, category)
    if chosen:
        for dotted, value in presets[chosen].items():
            set_value(config, dotted, value, f"preset {chosen}")
    if config_file:
        loaded = _read_yaml(Path(config_file))
        loaded.pop("presets", None)
        loaded.pop("inputs", None)
        loaded.pop("preset", None)
        loaded.pop("protocol", None)
        for dotted, value in flatten(loaded):
            set_value(config, dotted, value, str(config_file))
    for text in overrides:
        dotted, value = parse_override(text)
        set_value(config, dotted, value, "--set")
    if config["model"].get("name", model) != model:
        raise InputError(f"the config is for model '{config['model']['name']}', not '{model}'",
                         field="model.name", hint="pass --model with the config's model")
    config["model"]["name"] = model
    if config["model"].get("relevance_threshold") == "auto":
        config["model"]["relevance_threshold"] = relevance_threshold
    scheme = config.get("sampling", {}).get("scheme", "groups")
    if config.get("loss", {}).get("margin") == "auto":
        config["loss"]["margin"] = "label-gap" if scheme == "groups" else 1.0
    config["preset"] = chosen or "none"
    config["protocol"] = protocol
    resolve_encoder_settings(config, text_mode)
    validate(config)
    return config


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
    """Check the values the trainer relies on, with the key to fix in the message."""
    for section in SECTIONS:
        if section not in config:
            raise InputError(f"the config has no '{section}' section", field=section)
    train = config["train"]
    if train["monitor"] not in METRICS:
        raise InputError(f"train.monitor must be one of {', '.join(METRICS)}",
                         field="train.monitor")
    if config.get("protocol", "paper") not in PROTOCOLS:
        raise InputError(f"protocol must be one of {', '.join(PROTOCOLS)}", field="protocol")
    if config["sampling"]["scheme"] not in {"groups", "pairs"}:
        raise InputError("sampling.scheme must be groups or pairs", field="sampling.scheme")
    margin = config["loss"]["margin"]
    if margin != "label-gap" and not isinstance(margin, (int, float)):
        raise InputError("loss.margin must be auto, label-gap or a number", field="loss.margin")
    if str(train["amp"]).lower() not in {"auto", "true", "false"}:
        raise InputError("train.amp must be auto, true or false", field="train.amp")
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if not isinstance(train[key], int) or train[key] < 1:
            raise InputError(f"train.{key} must be a positive integer", field=f"train.{key}")


def fingerprint_settings(config: Mapping) -> dict:
    """What identifies a run's results (everything but where the inputs live)."""
    return {k: copy.deepcopy(v) for k, v in config.items() if k != "inputs"}
