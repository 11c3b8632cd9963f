"""Training configs: precedence, presets from the paper's tables, refused typos."""

from __future__ import annotations

import pytest
import yaml

from mrhp_prep.errors import InputError
from mrhp_prep.train.settings.config import resolve_config


def test_defaults_are_the_papers_table_5_home_column():
    config = resolve_config("sancl", preset="none")
    model, train = config["model"], config["train"]
    assert (model["text_hidden"], model["image_hidden"], model["shared_hidden"]) == (128, 128, 64)
    assert (model["embedding_dropout"], model["kappa"], train["lr"]) == (0.2, 0.1, 1e-4)
    assert train["batch_size"] == 32 and config["preset"] == "none"
    assert config["sampling"] == {"scheme": "groups", "negatives": 7, "min_label_gap": 2,
                                  "weighted": True, "resample": True}
    assert config["loss"]["margin"] == "label-gap"


@pytest.mark.parametrize("mode, category, lr, dropout, kappa, name", [
    ("static", "electronics", 5e-5, 0.5, 0.1, "glove-electronics"),
    ("static", "clothing", 1e-4, 0.5, 0.25, "glove-clothing"),
    ("features", "clothing", 2e-5, 0.5, 0.3, "bert-clothing"),
    ("features", "home", 2e-5, 0.5, 0.25, "bert-home"),
])
def test_auto_preset_picks_the_column(mode, category, lr, dropout, kappa, name):
    config = resolve_config("sancl", text_mode=mode, category=category)
    assert config["preset"] == name
    assert (config["train"]["lr"], config["model"]["embedding_dropout"],
            config["model"]["kappa"]) == (lr, dropout, kappa)


def test_precedence_preset_file_set(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"train": {"lr": 0.001, "epochs": 4},
                                    "model": {"kappa": 0.5}}))
    config = resolve_config("sancl", preset="glove-clothing", config_file=path,
                            overrides=["train.epochs=7", "sampling.scheme=pairs"],
                            relevance_threshold=0)
    assert config["train"]["lr"] == 0.001            # file over preset
    assert config["model"]["kappa"] == 0.5
    assert config["model"]["embedding_dropout"] == 0.5   # preset over defaults
    assert config["train"]["epochs"] == 7            # --set over file
    assert config["loss"]["margin"] == 1.0           # pairs: the papers' margin
    assert config["model"]["relevance_threshold"] == 0   # Lazada


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "train.epoch"),
    ("model=3", "section"),
    ("train.monitor=auc", "train.monitor"),
    ("loss.margin=wide", "loss.margin"),
    ("novalue", "KEY=VALUE"),
])
def test_bad_settings_name_the_key(override, message):
    with pytest.raises(InputError, match=message):
        resolve_config("sancl", overrides=[override])


def test_unknown_preset_and_model():
    with pytest.raises(InputError, match="glove-home"):
        resolve_config("sancl", preset="glove-kitchen")
    with pytest.raises(InputError, match="sancl"):
        resolve_config("nope")
