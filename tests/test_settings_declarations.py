"""Every training setting is declared once: the docs table, the defaults, the typed section
objects and the reading of values all come from the declarations."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mrhp_prep.errors import InputError
from mrhp_prep.train.data.dataset import DataConfig
from mrhp_prep.train.data.sampling import SamplingConfig
from mrhp_prep.train.loop.trainer import TrainSettings
from mrhp_prep.train.models import MODELS
from mrhp_prep.train.models.mcl import MclOptions
from mrhp_prep.train.models.mmss import MmssOptions
from mrhp_prep.train.models.sancl import SanclOptions
from mrhp_prep.train.models.text_encoder import EncoderOptions
from mrhp_prep.train.settings import settings_table
from mrhp_prep.train.settings.catalog import declared, default_config, sections_of
from mrhp_prep.train.settings.config import resolve_config
from mrhp_prep.train.settings.declaration import Setting
from mrhp_prep.train.settings.model_settings import ENCODER_KEYS, MODEL_SECTIONS
from mrhp_prep.train.settings.setting_types import Number, at_least
from mrhp_prep.train.settings.training_settings import RUN_SECTIONS
from mrhp_prep.train.settings.typed_sections import section_fields


def test_the_committed_docs_table_is_the_declarations():
    assert settings_table.DOCS_PAGE.read_text() == settings_table.render(), (
        "docs/settings.md is stale: python -m mrhp_prep.train.settings.settings_table --write")


@pytest.mark.parametrize("model", sorted(MODEL_SECTIONS))
def test_every_default_is_a_value_its_own_declaration_accepts(model):
    for dotted, setting in declared(model).items():
        default = setting.default_for(model)
        assert json.dumps(setting.read(dotted, default, "default")) == json.dumps(default), dotted


def test_models_match_the_registry_and_keys_are_unique():
    assert set(MODEL_SECTIONS) == set(MODELS)
    for model in MODEL_SECTIONS:
        for section, settings in sections_of(model).items():
            keys = [s.key for s in settings]
            assert len(keys) == len(set(keys)), (model, section)
            for setting in settings:        # a per-model default only for models that have it
                for other in setting.by_model:
                    assert setting in sections_of(other)[section], (setting.key, other)


def _fields(cls) -> dict:
    return {f.name: (f.default_factory() if f.default is dataclasses.MISSING else f.default)
            for f in dataclasses.fields(cls)}


def test_the_typed_sections_are_the_declarations():
    for cls, section in ((DataConfig, "data"), (SamplingConfig, "sampling"),
                         (TrainSettings, "train")):
        assert _fields(cls) == {s.key: s.default for s in RUN_SECTIONS[section]}
    for cls, model in ((SanclOptions, "sancl"), (MclOptions, "mcl"), (MmssOptions, "mmss")):
        expected = {k: v for k, v in default_config(model)["model"].items()
                    if k not in {"name", *ENCODER_KEYS}}
        if model == "mcl":           # built without a config: Amazon's threshold, not `auto`
            expected["relevance_threshold"] = 1.0
        assert _fields(cls) == expected, model
    assert tuple(_fields(EncoderOptions)) == ENCODER_KEYS
    with pytest.raises(InputError, match=r"unknown DataConfig option\(s\) \['max_rois'\]"):
        DataConfig.from_config({"max_rois": 3})
    assert DataConfig.from_config({"max_text_tokens": 9}) == DataConfig(max_text_tokens=9)


@pytest.mark.parametrize("cls,section,words", [
    (SanclOptions, {"architecture": "relased"}, "'model.architecture' must be paper or released"),
    (SanclOptions, {"image_encoders": "both"}, "'model.image_encoders' must be shared or"),
    (SanclOptions, {"contrastive_reduction": "median"}, "'model.contrastive_reduction'"),
    (MmssOptions, {"pseudo_label_timing": "later"}, "'model.pseudo_label_timing' must be"),
    (MmssOptions, {"subtasks": ["ptrt", "ptrt"]}, "'model.subtasks' must be a list of dist"),
    (MclOptions, {"relevance_threshold": "half"}, "'model.relevance_threshold' must be auto"),
    (SamplingConfig, {"scheme": "triples"}, "'sampling.scheme' must be groups or pairs"),
    (SamplingConfig, {"min_label_gap": 0}, "'sampling.min_label_gap' = 0 is out of range"),
    (TrainSettings, {"lr": "fast"}, "'train.lr' must be a number"),
])
def test_a_typed_section_reads_each_value_by_its_declaration(cls, section, words):
    """Built from a config section (a model from Python, a run's config.yaml), every value is
    read as --set reads it: a bad choice or range is an InputError naming the key, never a
    bare ValueError or a silently accepted word."""
    with pytest.raises(InputError, match=words):
        cls.from_config(section)
    assert SanclOptions.from_config({"kappa": "1e-1"}).kappa == 0.1     # converted, as --set
    assert MclOptions.from_config({"relevance_threshold": None}).relevance_threshold is None


def test_ranges_are_declared_not_guessed_from_the_name():
    """A key ending in `dropout` or `_layers` has the range its declaration gives, whatever its
    name says; and the ranges the trainer needs are there."""
    lenient = Setting("odd_dropout", Number(at_least(0)), 0.5, "a weight, named badly")
    assert lenient.read("train.odd_dropout", 3, "--set") == 3.0
    for override, words in [("model.fusion_cnn_kernel=0", ">= 1"),
                            ("model.covariance_shrinkage=1.5", "<= 1")]:
        with pytest.raises(InputError, match=words):
            resolve_config("mcl" if "fusion" in override else "mmss", overrides=[override])


def test_a_new_setting_is_one_declaration(monkeypatch, tmp_path):
    """What docs/train.md ("Adding a setting") promises: one `Setting` in a section's tuple
    gives the default, `--set` and config-file reading with its type and range, the error
    naming key, value and source, the docs row and the typed field."""
    warmup = Setting("warmup_epochs", Number(at_least(0)), 0.0,
                     "epochs over which the learning rate rises from 0")
    monkeypatch.setitem(RUN_SECTIONS, "train", (*RUN_SECTIONS["train"], warmup))

    assert default_config("mcl")["train"]["warmup_epochs"] == 0.0
    config = resolve_config("mcl", overrides=["train.warmup_epochs=2"])
    assert config["train"]["warmup_epochs"] == 2.0 and isinstance(
        config["train"]["warmup_epochs"], float)
    mine = tmp_path / "mine.yaml"
    mine.write_text("train: {warmup_epochs: -1}\n")
    with pytest.raises(InputError) as error:
        resolve_config("mcl", config_file=mine)
    assert all(word in str(error.value) for word in ("train.warmup_epochs", "-1", "mine.yaml",
                                                     ">= 0"))
    assert "| `train.warmup_epochs` | number | >= 0 |" in settings_table.render()
    fields = _fields(section_fields("train"))
    assert fields["warmup_epochs"] == 0.0
