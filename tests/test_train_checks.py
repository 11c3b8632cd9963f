"""Focused tests of the training guards: setting types and ranges, non-finite losses and
scores, option conflicts."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import yaml

from mrhp_prep.errors import CommandLineError, InputError
from mrhp_prep.train.data.checks import NonFiniteError
from mrhp_prep.train.loop.guards import check_batch, check_losses, check_scores, finite_inputs
from mrhp_prep.train.settings.config import model_defaults, resolve_config
from mrhp_prep.train.settings.option_conflicts import check_predict_selection, check_resume_options
from mrhp_prep.train.settings.catalog import declared


@pytest.mark.parametrize("override, key, expected", [
    ("train.lr=5e-5", "lr", 5e-5),            # YAML 1.1 reads 5e-5 as a string
    ("train.lr=3", "lr", 3.0),
    ("train.epochs=1e1", "epochs", 10),
    ("train.epochs='7'", "epochs", 7),
    ("train.grad_clip=0", "grad_clip", 0.0),
])
def test_overrides_take_the_type_of_the_default(override, key, expected):
    value = resolve_config("sancl", overrides=[override])["train"][key]
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("word, expected", [("false", False), ("off", False), ("0", False),
                                            ("no", False), ("true", True), ("on", True),
                                            ("yes", True), ("1", True)])
def test_flags_read_words(word, expected):
    config = resolve_config("sancl", overrides=[f"sampling.weighted={word}"])
    assert config["sampling"]["weighted"] is expected


def test_a_config_file_is_typed_too(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  lr: 5e-5\n  epochs: '4'\nsampling:\n  weighted: 'false'\n")
    assert yaml.safe_load(path.read_text())["train"]["lr"] == "5e-5"   # the YAML trap itself
    config = resolve_config("sancl", config_file=path)
    assert config["train"]["lr"] == 5e-5 and config["train"]["epochs"] == 4
    assert config["sampling"]["weighted"] is False


@pytest.mark.parametrize("override, words", [
    ("train.lr=-1", ("train.lr", ">= 0")),
    ("train.lr=inf", ("train.lr", "finite")),
    ("train.epochs=0", ("train.epochs", ">= 1")),
    ("train.epochs=true", ("train.epochs", "an integer")),
    ("train.batch_size=abc", ("train.batch_size", "an integer")),
    ("model.kappa=abc", ("model.kappa", "a number")),
    ("model.kappa=-0.5", ("model.kappa", ">= 0")),
    ("model.temperature=0", ("model.temperature", "> 0")),
    ("train.plateau_factor=1", ("train.plateau_factor", "< 1")),
    ("data.max_text_tokens=0", ("data.max_text_tokens", ">= 1")),
    ("model.text_hidden=0", ("model.text_hidden", ">= 1")),
    # settings that take a word or a number refuse other words
    ("model.probe_beta=abc", ("model.probe_beta", "learned or a finite number")),
    ("model.probe_beta=2", ("model.probe_beta", "<= 1")),
    ("loss.margin=wide", ("loss.margin", "label-gap")),
    ("model.relevance_threshold=nan", ("model.relevance_threshold", "auto or a finite")),
])
def test_bad_values_name_the_key_and_what_is_expected(override, words):
    with pytest.raises(InputError) as caught:
        resolve_config("sancl", overrides=[override])
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize("model", ["sancl", "mcl", "mmss"])
def test_every_default_and_preset_is_in_range(model):
    _, presets = model_defaults(model)
    for preset in ["none", *presets]:
        config = resolve_config(model, preset=preset)
        assert math.isfinite(config["train"]["lr"]) and config["train"]["lr"] > 0


@pytest.mark.parametrize("override, key, expected", [
    ("model.probe_beta=learned", ("model", "probe_beta"), "learned"),
    ("model.probe_beta=5e-1", ("model", "probe_beta"), 0.5),
    ("loss.margin=label-gap", ("loss", "margin"), "label-gap"),
    ("loss.margin=2e0", ("loss", "margin"), 2.0),
    ("model.relevance_threshold=0", ("model", "relevance_threshold"), 0.0),
])
def test_word_or_number_settings(override, key, expected):
    config = resolve_config("sancl", overrides=[override])
    assert config[key[0]][key[1]] == expected


def test_number_or_null_settings():
    config = resolve_config("mmss", overrides=["model.distance_scale=2",
                                               "model.num_train_reviews=1e3"])
    assert config["model"]["distance_scale"] == 2.0
    assert config["model"]["num_train_reviews"] == 1000
    assert resolve_config("mmss", overrides=["model.distance_scale=null"])["model"][
        "distance_scale"] is None
    with pytest.raises(InputError, match="model.distance_scale"):
        resolve_config("mmss", overrides=["model.distance_scale=wide"])


def test_other_kinds_keep_or_refuse_their_value():
    settings = declared("mmss")

    def read(dotted, value):
        return settings[dotted].read(dotted, value, "--set")

    assert read("model.name", "mmss") == "mmss"                 # text: kept as given
    assert read("model.distance_scale", 3) == 3.0
    assert read("model.subtasks", ["rtrv", "ptrt"]) == ["rtrv", "ptrt"]
    with pytest.raises(InputError, match="a list"):
        read("model.subtasks", "ptrt")
    with pytest.raises(InputError, match="distinct names among ptrt"):
        read("model.subtasks", ["ptrt", "pxrx"])


def test_non_finite_scores_are_refused_naming_the_reviews():
    frame = pd.DataFrame({"product_id": ["P", "P", "Q"], "review_id": ["a", "b", "c"],
                          "label": [1.0, 0.0, 2.0], "score": [0.5, float("nan"), float("inf")]})
    with pytest.raises(NonFiniteError, match=r"2 of 3 scores of the dev split .*reviews b, c"):
        check_scores(frame, "dev split")
    check_scores(frame.assign(score=[0.1, 0.2, 0.3]), "dev split")


def test_a_non_finite_loss_names_the_step_and_the_weights():
    model = torch.nn.Linear(2, 1)
    check_losses({"loss": 1.0, "rank_loss": 1.0, "aux_loss": 0.0}, epoch=1, step=1, model=model)
    with pytest.raises(NonFiniteError, match="epoch 2, step 17.*overflowed"):
        check_losses({"loss": math.nan, "rank_loss": 1.0, "aux_loss": math.nan}, epoch=2,
                     step=17, model=model)
    with torch.no_grad():
        model.bias.fill_(math.inf)
    with pytest.raises(NonFiniteError, match="weights became non-finite .*bias"):
        check_losses({"loss": math.inf, "rank_loss": math.inf, "aux_loss": 0.0}, epoch=1,
                     step=3, model=model)


def test_finite_inputs_looks_at_float_tensors_only():
    batch = {"label": torch.ones(3), "review_index": torch.arange(3),
             "review_image": torch.zeros(3, 4, 2, dtype=torch.float16)}
    assert bool(finite_inputs(batch))
    batch["review_image"][1, 2, 0] = float("nan")
    assert not bool(finite_inputs(batch))


def test_a_sum_that_overflows_is_not_taken_for_a_nan():
    batch = {"review_image": torch.full((2, 3), 3e38), "review_index": torch.arange(2)}
    finite = finite_inputs(batch)
    assert not bool(finite)                      # the cheap test cannot tell ...
    check_batch(finite, batch, rows=[0, 1], dataset=None, what="a test")   # ... this can
    batch["review_image"][0, 0] = float("-inf")
    with pytest.raises(NonFiniteError, match="a test"):
        check_batch(finite_inputs(batch), batch, rows=[], dataset=None, what="a test")


def test_resume_accepts_the_runs_own_options(tmp_path):
    manifest = tmp_path / "m"
    manifest.mkdir()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        {"model": {"name": "mcl"}, "inputs": {"manifest": str(manifest.resolve()), "rois": None,
                                             "text": None, "probes": None}}))
    check_resume_options(str(tmp_path), {"model": "mcl", "manifest": str(manifest)})
    with pytest.raises(CommandLineError, match="--rois"):
        check_resume_options(str(tmp_path), {"rois": str(manifest)})
    with pytest.raises(CommandLineError, match="--preset"):
        check_resume_options(str(tmp_path), {"preset": "bert-home"})


def test_predict_selection():
    check_predict_selection(("P1",), None)
    check_predict_selection((), "test")
    with pytest.raises(CommandLineError):
        check_predict_selection(("P1",), "test")


def test_a_steps_losses_and_logs_are_read_together_and_checked():
    """Models log 0-d tensors; the trainer reads them with the losses in one transfer, as
    floats, and a NaN loss among them is still refused."""
    from mrhp_prep.train.loop.trainer import step_values

    loss = torch.tensor(0.5, requires_grad=True) * 2
    read = step_values({"loss": loss, "rank_loss": torch.tensor(0.25, dtype=torch.float16),
                        "aux_loss": torch.zeros(()), "beta": torch.tensor([0.75]), "n": 3})
    assert read == {"loss": 1.0, "rank_loss": 0.25, "aux_loss": 0.0, "beta": 0.75, "n": 3.0}
    assert all(type(v) is float for v in read.values())
    with pytest.raises(NonFiniteError, match="non-finite loss"):
        check_losses(step_values({"loss": torch.tensor(math.nan)}), epoch=1, step=1,
                     model=torch.nn.Linear(2, 1))
