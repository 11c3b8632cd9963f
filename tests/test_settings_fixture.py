"""The resolved config of a run stays what it was: every model x preset x protocol x text mode
x a few overrides (and two config files) resolves to exactly the dict recorded in
`tests/data/resolved_configs.json` (values, their JSON types and the order of the keys), which
the settings code of before the single-declaration tables wrote. Run fingerprints hash this
dict, so a run started before keeps its folder and resumes.

The fixture keeps each model's base config once (preset none, protocol paper, no store) and,
per case, the keys whose value differs from it. `python tests/test_settings_fixture.py
--write` writes it again (only for a deliberate change of a resolved config).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mrhp_prep.train.settings.config import (flatten, model_defaults, model_protocols,
                                             resolve_config)

FIXTURE = Path(__file__).parent / "data" / "resolved_configs.json"
TEXT_MODES = (None, "static", "features", "ids")
COMMON_OVERRIDES = (
    (),
    ("train.lr=5e-5", "train.epochs=1e1", "sampling.weighted=off", "train.amp=true"),
    ("sampling.scheme=pairs", "train.monitor=mrr", "data.dev_set=sampled"),
    ("train.encoder_lr=3e-5", "model.finetune_layers=2", "model.image_layers=2"),
    ("train.encoder_lr=null", "model.finetune_layers=all", "loss.margin=2e0",
     "model.shared_encoder=yes", "train.batch_size='16'"),
)
MODEL_OVERRIDES = {
    "sancl": (("model.probe_beta=0.5", "model.architecture=released",
               "model.image_encoders=per-field", "model.contrastive_reduction=mean",
               "model.kappa=0", "model.text_hidden=64.0"),
              ("model.relevance_threshold=2", "model.probe_beta=learned")),
    "mcl": (("model.adaptive_weighting=false", "model.interaction_layers=2",
             "model.positive_optimum=1", "loss.margin=label-gap"),
            ("model.relevance_threshold=0",)),
    "mmss": (("model.subtasks=[ptrt, rtrv]", "model.distance_scale=2",
              "model.num_train_reviews=1e3", "model.pseudo_label_timing=same-epoch",
              "model.epsilon=1e-5"),),
}
CONFIG_FILES = (
    "train:\n  lr: 5e-5\n  epochs: '4'\nsampling:\n  weighted: 'false'\n",
    ("model:\n  embedding_dropout: 0.3\n  image_heads: 2\nloss:\n  margin: 0.5\n"
     "preset: glove-home\nprotocol: released\ninputs: {manifest: x}\n"),
)


def cases() -> list[dict]:
    """Every combination the fixture records (JSON-ready: the test reads them back)."""
    found = []
    for model in ("sancl", "mcl", "mmss"):
        presets = ["auto", "none", *model_defaults(model)[1]]
        protocols = list(model_protocols(model))
        for preset in presets:
            for protocol in protocols:
                for mode in TEXT_MODES:
                    for overrides in (*COMMON_OVERRIDES, *MODEL_OVERRIDES[model]):
                        found.append({"model": model, "preset": preset, "protocol": protocol,
                                      "text_mode": mode, "category": "electronics",
                                      "overrides": list(overrides)})
        for text in CONFIG_FILES:
            for threshold in (1, 0.0):
                found.append({"model": model, "preset": "auto", "protocol": "paper",
                              "text_mode": "static", "category": "home",
                              "overrides": ["train.seed=7"], "config_file": text,
                              "relevance_threshold": threshold})
    return found


def resolve(case: dict, tmp: Path) -> dict:
    config_file = None
    if "config_file" in case:
        config_file = tmp / "mine.yaml"
        config_file.write_text(case["config_file"])
    return resolve_config(case["model"], config_file=config_file, preset=case["preset"],
                          overrides=case["overrides"], text_mode=case["text_mode"],
                          category=case["category"], protocol=case["protocol"],
                          relevance_threshold=case.get("relevance_threshold", 1))


def exact(value) -> str:
    """The value as JSON: 1, 1.0 and true differ, as they do in a fingerprint."""
    return json.dumps(value)


def delta(config: dict, base: dict) -> dict:
    """Dotted keys of `config` whose value (or JSON type) differs from `base`'s."""
    flat_base = dict(flatten(base))
    return {key: value for key, value in flatten(config)
            if key not in flat_base or exact(value) != exact(flat_base[key])}


def base_config(model: str) -> dict:
    return resolve_config(model, preset="none")


def write(tmp: Path) -> None:
    bases = {model: base_config(model) for model in ("sancl", "mcl", "mmss")}
    recorded = [{**case, "changed": delta(resolve(case, tmp), bases[case["model"]])}
                for case in cases()]
    lines = [f" {json.dumps(case)}" for case in recorded]       # one case a line
    FIXTURE.write_text(f'{{"bases": {json.dumps(bases, indent=1)},\n"cases": [\n'
                       + ",\n".join(lines) + "\n]}\n")


def expected_config(base: dict, changed: dict) -> dict:
    config = json.loads(json.dumps(base))
    for dotted, value in changed.items():
        *sections, key = dotted.split(".")
        node = config
        for section in sections:
            node = node[section]
        node[key] = value
    return config


RECORDED = json.loads(FIXTURE.read_text()) if FIXTURE.is_file() else {"bases": {}, "cases": []}


def test_the_fixture_covers_every_combination():
    recorded = [{k: v for k, v in case.items() if k != "changed"} for case in RECORDED["cases"]]
    assert recorded == cases()
    assert len(recorded) > 300


@pytest.mark.parametrize("model", ["sancl", "mcl", "mmss"])
def test_base_configs_are_unchanged(model):
    assert exact(base_config(model)) == exact(RECORDED["bases"][model])


def test_every_resolved_config_is_unchanged(tmp_path):
    mismatches = []
    for case in RECORDED["cases"]:
        config = resolve(case, tmp_path)
        wanted = expected_config(RECORDED["bases"][case["model"]], case["changed"])
        if exact(config) != exact(wanted):       # key order and JSON types included
            got, want = dict(flatten(config)), dict(flatten(wanted))
            diff = {k: (got.get(k), want.get(k)) for k in {*got, *want}
                    if exact(got.get(k)) != exact(want.get(k))}
            mismatches.append((case["model"], case["preset"], case["protocol"],
                               case["text_mode"], case["overrides"], diff or "key order"))
    assert not mismatches, mismatches[:5]


if __name__ == "__main__" and "--write" in sys.argv:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        write(Path(folder))
