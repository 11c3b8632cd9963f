"""Training the way the papers' numbers were made: the `released` protocol and its settings
(groups drawn once, SANCL's sampled dev set), `train --dry-run`, `model.txt`, and `compare`
naming each run's architecture and protocol."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from feature_stores import stores_for
from mrhp_prep.cache import open_stage
from mrhp_prep.cli import cli
from mrhp_prep.errors import InputError
from mrhp_prep.train.data.dataset import DataConfig, FeatureSources, ReviewDataset
from mrhp_prep.train.data.sampling import (GroupBatchSampler, SamplingConfig, label_weights,
                                           sampled_dev_rows)
from mrhp_prep.train.report.predictions import write_predictions
from mrhp_prep.train.settings.config import (flatten, model_defaults, model_protocols,
                                             protocol_of, resolve_config)
from train_fixtures import make_trainer, one_torch_thread, sample_stores  # noqa: F401

RELEASED_SANCL = {"train.monitor": "mrr", "train.early_stopping_patience": 8,
                  "train.epochs": 11, "train.grad_clip": 0.0,
                  "model.relevance_threshold": 2.0, "sampling.resample": False,
                  "data.dev_set": "sampled"}
RELEASED_MCL = {"train.monitor": "mrr", "train.epochs": 31, "train.early_stopping_patience": 0,
                "train.grad_clip": 0.0, "model.relevance_threshold": 1.0}


def value(config: dict, dotted: str):
    section, key = dotted.split(".")
    return config[section][key]


# --------------------------------------------------------------------------- protocols


@pytest.mark.parametrize("model,expected", [("sancl", RELEASED_SANCL), ("mcl", RELEASED_MCL)])
def test_the_released_protocol_sets_what_it_says(model, expected):
    paper = resolve_config(model, preset="none")
    released = resolve_config(model, preset="none", protocol="released")
    assert released["protocol"] == "released" and paper["protocol"] == "paper"
    for dotted, wanted in expected.items():
        assert value(released, dotted) == wanted, dotted
    flat_paper, flat_released = dict(flatten(paper)), dict(flatten(released))
    differing = {k for k in flat_paper if k != "protocol" and flat_paper[k] != flat_released[k]}
    assert differing == {k for k, v in expected.items() if value(paper, k) != v}
    assert protocol_of(released) == "released" and protocol_of(paper) == "paper"


def test_released_sancl_keeps_what_the_paper_states_and_stacks_on_the_category_column():
    """A protocol only sets what the paper leaves open: the Table 5 column (lr, dropout, κ)
    of --preset auto stays, and no protocol key is a preset key, for any model."""
    config = resolve_config("sancl", text_mode="static", category="electronics",
                            protocol="released")
    assert config["preset"] == "glove-electronics"
    assert (config["train"]["lr"], config["model"]["kappa"]) == (5e-5, 0.1)  # paper, not 0.5
    assert config["model"]["architecture"] == "paper" and config["train"]["batch_size"] == 32
    for model in ("sancl", "mcl", "mmss"):
        _, presets = model_defaults(model)
        preset_keys = {key for column in presets.values() for key in column}
        for settings in model_protocols(model).values():
            assert not preset_keys & set(settings), model


def test_mmss_has_no_released_protocol_and_says_why():
    with pytest.raises(InputError, match="no 'released' protocol") as error:
        resolve_config("mmss", protocol="released")
    assert "released code" in error.value.hint


def test_a_set_that_undoes_a_protocol_key_is_named():
    config = resolve_config("sancl", protocol="released", overrides=["train.epochs=30"])
    assert protocol_of(config) == "released except train.epochs"
    config = resolve_config("sancl", overrides=["train.monitor=mrr"])
    assert protocol_of(config) == "paper except train.monitor"


# --------------------------------------------------------------------------- sampling


LABELS = np.array([4, 3, 2, 1, 0, 0, 2, 2, 1, 3, 0, 0], dtype=np.float32)
ROWS = [np.arange(0, 6), np.arange(6, 9), np.arange(9, 12)]


def test_groups_drawn_once_keep_their_members_and_change_their_order():
    once = SamplingConfig(resample=False)
    sampler = GroupBatchSampler(LABELS, ROWS, once, batch_size=8, seed=3)
    every = GroupBatchSampler(LABELS, ROWS, SamplingConfig(), batch_size=8, seed=3)
    epochs = [[tuple(b.tolist()) for b in sampler.plan(e)] for e in range(4)]
    assert epochs[0] == [tuple(b.tolist()) for b in every.plan(0)]     # epoch 0: the same draw
    assert all(sorted(e) == sorted(epochs[0]) for e in epochs)           # same groups ...
    assert len({tuple(e) for e in epochs}) > 1                           # ... in other orders
    redrawn = [sorted(tuple(b.tolist()) for b in every.plan(e)) for e in range(4)]
    assert len({tuple(r) for r in redrawn}) > 1                          # resample: new groups


def test_sampled_dev_rows_follow_the_released_eval_config():
    """Per product and label level but the lowest: 3 positives of that level with
    replacement, each with 5 negatives of a lower label, weighted by 1 - label share."""
    rows = sampled_dev_rows(LABELS, ROWS, seed=0)
    groups = rows.reshape(-1, 6)
    levels = sum(len(np.unique(LABELS[r])) - 1 for r in ROWS)            # 4 + 1 + 2
    assert len(groups) == 3 * levels
    product_of = np.repeat(np.arange(3), [6, 3, 3])
    for group in groups:
        positive, negatives = group[0], group[1:]
        assert (product_of[negatives] == product_of[positive]).all()
        assert (LABELS[negatives] < LABELS[positive]).all()
    firsts = groups[:, 0]
    assert sorted(LABELS[firsts[:12]].tolist()) == [1] * 3 + [2] * 3 + [3] * 3 + [4] * 3
    assert (np.diff(product_of[rows]) >= 0).all()                         # grouped by product
    # the weights: label 4 draws from {3, 2, 1, 0, 0}; over many seeds label 3 comes up with
    # probability w3 / (w3 + w2 + w1 + 2 w0)
    w = label_weights(LABELS)
    drawn = np.concatenate([sampled_dev_rows(LABELS, ROWS[:1], seed=s, positives=1)[1:6]
                            for s in range(400)])
    share = w[3.0] / (w[3.0] + w[2.0] + w[1.0] + 2 * w[0.0])
    assert np.mean(drawn == 1) == pytest.approx(share, abs=0.03)


def test_a_sampled_dev_set_picks_the_epoch_on_its_own_rows(stores, tmp_path):
    sources = FeatureSources(stores["manifest"], rois=stores["rois"], text=stores["text"],
                             probes=stores["probes"])
    trainer = make_trainer(sources, "sancl", tmp_path, ["data.dev_set=sampled",
                                                         "model.text_hidden=16"])
    dev = ReviewDataset(sources, sources.split("dev"), DataConfig())
    table = dev.table
    expected = sampled_dev_rows(table.labels, table.rows_by_product(), seed=2022)
    assert len(trainer.dev_set) == len(expected) > 0
    assert list(trainer.dev_set.table.review_ids) == list(table.review_ids[expected])
    summary = trainer.evaluate(trainer.dev_set)
    assert np.isfinite(summary["map"])


# --------------------------------------------------------------------------- dry run


@pytest.fixture(scope="module")
def wide_stores(sample_manifest, tmp_path_factory):
    """The sample with 2048-d RoI features, as extract-rois writes them."""
    return stores_for(sample_manifest, tmp_path_factory.mktemp("wide"), text_dim=8,
                      roi_dim=2048)


def _train_command(stores, cache, *extra):
    return ["train", "--model", "sancl", "--manifest", str(stores["manifest"]),
            "--rois", str(stores["rois"]), "--text", str(stores["text"]),
            "--probes", str(stores["probes"]), "--cache-dir", str(cache), "--device", "cpu",
            "--num-workers", "0", *extra]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _row(output: str, name: str) -> list[str]:
    return next(line.split() for line in output.splitlines() if line.split()[:1] == [name])


def test_dry_run_prints_the_config_and_parameters_and_writes_nothing(wide_stores, tmp_path,
                                                                     runner):
    roots = [Path(wide_stores["manifest"]).parents[3], Path(wide_stores["text"]).parent]
    before = [_tree(root) for root in roots], _tree(tmp_path)
    result = runner.invoke(cli, _train_command(wide_stores, tmp_path / "cache", "--dry-run"))
    assert result.exit_code == 0, result.output
    # no stage folder, no cache entry, nothing beside the inputs
    assert ([_tree(root) for root in roots], _tree(tmp_path)) == before
    out = result.stdout
    config = yaml.safe_load(out.split("# model ")[0])
    assert config["model"]["architecture"] == "paper" and config["protocol"] == "paper"
    assert _row(out, "image_encoder")[1] == "857,344"
    assert _row(out, "image_cross_attention")[1] == "16,512"
    assert _row(out, "text_cross_attention")[1] == "16,512"
    last = out.strip().splitlines()[-1]
    assert last.startswith("total without embedding tables ")
    paper_total = int(last.rsplit(" ", 1)[1].replace(",", ""))

    released = runner.invoke(cli, _train_command(wide_stores, tmp_path / "cache", "--dry-run",
                                                 "--set", "model.architecture=released"))
    assert released.exit_code == 0, released.output
    total = int(released.stdout.strip().splitlines()[-1].rsplit(" ", 1)[1].replace(",", ""))
    assert total - paper_total == 107_008
    assert _row(released.stdout, "cpc_ii")[1] == "16,640"
    assert ([_tree(root) for root in roots], _tree(tmp_path)) == before


def test_every_run_folder_keeps_the_parameter_table(stores, tmp_path, runner):
    result = runner.invoke(cli, _train_command(
        stores, tmp_path / "cache", "--set", "train.epochs=1", "--set", "model.text_hidden=8",
        "--set", "model.image_hidden=8", "--set", "model.shared_hidden=8",
        "--set", "model.image_ffn_dim=8", "--set", "model.image_layers=1"))
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    dry = runner.invoke(cli, _train_command(
        stores, tmp_path / "cache", "--dry-run", "--set", "train.epochs=1",
        "--set", "model.text_hidden=8", "--set", "model.image_hidden=8",
        "--set", "model.shared_hidden=8", "--set", "model.image_ffn_dim=8",
        "--set", "model.image_layers=1"))
    table = (run / "model.txt").read_text()
    assert dry.stdout.endswith(table)
    metrics = json.loads((run / "metrics.json").read_text())
    assert table.strip().endswith(f"{metrics['parameters_without_embeddings']:,}")


# --------------------------------------------------------------------------- compare


def _fake_run(root: Path, config: dict, inputs: dict, seed: int, reviews: pd.DataFrame) -> Path:
    """A finished training run folder with test predictions of random scores."""
    config = {**config, "train": {**config["train"], "seed": seed}}
    run = open_stage("train", dataset="sample", settings=config,
                     inputs={k: v for k, v in inputs.items() if v}, format_version=1,
                     out=root / f"{config['protocol']}-{seed}")
    (run.path / "config.yaml").write_text(yaml.safe_dump({**config, "inputs": inputs}))
    rng = np.random.default_rng(seed)
    frame = reviews[["product_id", "review_id", "label"]].assign(
        score=rng.normal(size=len(reviews)), rank=1)
    write_predictions(run.path / "predictions-test.jsonl", frame)
    (run.path / "metrics.json").write_text(json.dumps({"relevance_threshold": 1}))
    run.finish({}, metrics={}, model=config["model"]["name"])
    return run.path


def test_compare_names_architecture_and_protocol_and_marks_mcl_as_selected_on_test(
        stores, tmp_path, runner):
    inputs = {k: str(Path(v).resolve()) for k, v in stores.items()}
    from mrhp_prep.data.manifest import Manifest

    reviews = Manifest(inputs["manifest"]).reviews
    reviews = reviews[reviews["split"] == "test"]
    for protocol in ("paper", "released"):
        config = resolve_config("mcl", protocol=protocol, text_mode="static")
        for seed in (1, 2):
            _fake_run(tmp_path / "runs", config, inputs, seed, reviews)
    out = tmp_path / "compare"
    result = runner.invoke(cli, ["compare", str(tmp_path / "runs"), "--paper", "mcl",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(out / "compare.csv")
    assert sorted(summary["protocol"]) == ["paper", "released"]
    assert set(summary["architecture"]) == {"paper"}
    assert (summary["paper_table"] == "Table 4").all()
    assert summary["paper_selection"].str.contains("selected on the test set").all()
    markdown = (out / "compare.md").read_text()
    assert "selected on the test set" in markdown and "| released |" in markdown


def test_compare_names_a_sancl_runs_architecture(stores, tmp_path, runner):
    inputs = {k: str(Path(v).resolve()) for k, v in stores.items()}
    from mrhp_prep.data.manifest import Manifest

    reviews = Manifest(inputs["manifest"]).reviews
    reviews = reviews[reviews["split"] == "test"]
    config = resolve_config("sancl", text_mode="static", category="home",
                            overrides=["model.architecture=released"])
    _fake_run(tmp_path / "runs", config, inputs, 1, reviews)
    out = tmp_path / "compare"
    result = runner.invoke(cli, ["compare", str(tmp_path / "runs"), "--paper", "sancl",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    row = pd.read_csv(out / "compare.csv").iloc[0]
    assert (row["architecture"], row["protocol"]) == ("released", "paper")
    assert pd.isna(row["paper_selection"])             # SANCL's code does not show it
    assert os.path.getsize(out / "compare.png") > 1000
