"""The train / evaluate / predict commands end to end: run folder, resume, early stopping,
new products, and a planted signal the model must find."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from feature_stores import planted_release, stores_for, write_text_store
from mrhp_prep.cli import cli
from mrhp_prep.data.ingest import ingest
from mrhp_prep.errors import InputError
from mrhp_prep.train.loop import checkpoints
from mrhp_prep.train.data.dataset import FeatureSources
from mrhp_prep.train.report.metrics import evaluate_rankings
from mrhp_prep.train.report.predictions import read_predictions
from mrhp_prep.train.run import predict, train
from tolerances import EPS64, assert_close_in_scale, network_rtol, sum_rtol
from train_fixtures import (Crash, comparable, crashing_after, make_trainer,  # noqa: F401
                            one_torch_thread, sample_stores, widest_sum)

SMALL = ["model.text_hidden=16", "model.image_hidden=8", "model.shared_hidden=8"]


def _store_args(stores):
    return ["--manifest", str(stores["manifest"]), "--rois", str(stores["rois"]),
            "--text", str(stores["text"]), "--probes", str(stores["probes"])]


@pytest.fixture(scope="module")
def trained(stores, tmp_path_factory):
    """One small run through the command line (2 DataLoader workers)."""
    from click.testing import CliRunner

    cache = tmp_path_factory.mktemp("cache")
    args = ["train", *_store_args(stores), "--cache-dir", str(cache), "--num-workers", "2"]
    for setting in [*SMALL, "train.epochs=3", "train.lr=0.003"]:
        args += ["--set", setting]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return {"args": args, "path": result.stdout.strip().splitlines()[-1], "cache": cache}


def test_run_folder_contents(trained):
    from pathlib import Path

    run = Path(trained["path"])
    assert run.parent.name == "train" and run.parent.parent.name == "sample"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["preset"] == "glove-home"                      # category home, static text
    assert config["model"]["relevance_threshold"] == 1          # Amazon
    assert config["loss"]["margin"] == "label-gap" and config["train"]["epochs"] == 3
    assert config["inputs"]["rois"].endswith("rois")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dev"]["products"] == 2 and metrics["test"]["products"] == 2
    assert metrics["test"]["reviews"] == 10 and len(metrics["epochs"]) == 3
    assert 1 <= metrics["best_epoch"] <= 3
    predictions = [json.loads(line) for line in (run / "predictions-test.jsonl").open()]
    assert len(predictions) == 10
    assert set(predictions[0]) == {"product_id", "review_id", "label", "score", "rank"}
    for product in {p["product_id"] for p in predictions}:
        rows = [p for p in predictions if p["product_id"] == product]
        assert sorted(p["rank"] for p in rows) == list(range(1, len(rows) + 1))
        best = min(rows, key=lambda p: p["rank"])
        assert best["score"] == max(p["score"] for p in rows)
    for name in ("curves.png", "scores.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best.pt", "epoch-001.pt", "epoch-002.pt", "epoch-003.pt", "last.pt"]
    # best.pt is the best epoch's file itself (a hard link), not a second serialisation
    best_epoch = run / "checkpoints" / f"epoch-{metrics['best_epoch']:03d}.pt"
    assert (run / "checkpoints" / "best.pt").samefile(best_epoch)
    best = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert best["record"]["epoch"] == metrics["best_epoch"]
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert last["state"]["epoch"] == 3 and "optimizer" in last and len(last["rng"]) == 1
    assert not any("embedding" in key for key in last["model"])   # frozen vectors left out
    assert json.loads((run / "MANIFEST.json").read_text())["stage"] == "train"


def test_evaluate_agrees_with_metrics_json(trained, runner):
    from pathlib import Path

    run = Path(trained["path"])
    result = runner.invoke(cli, ["evaluate", str(run / "predictions-test.jsonl")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads((run / "metrics.json").read_text())["test"]


def test_same_command_reuses_the_finished_run(trained, runner):
    result = runner.invoke(cli, trained["args"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == trained["path"]
    assert "reused the finished run" in result.stderr


def test_bad_settings_are_refused(stores, runner, tmp_path):
    result = runner.invoke(cli, ["train", *_store_args(stores), "--cache-dir", str(tmp_path),
                                 "--set", "train.epoch=3"])
    assert result.exit_code == 3
    assert "train.epoch" in result.output and "epochs" in result.output
    result = runner.invoke(cli, ["train", *_store_args(stores), "--cache-dir", str(tmp_path),
                                 "--set", "train.monitor=auc"])
    assert result.exit_code == 3 and "train.monitor" in result.output


def _trainer(stores, run_dir, overrides, dataset_wrapper=None, seed=0):
    sources = FeatureSources(stores["manifest"], rois=stores["rois"], text=stores["text"],
                             probes=stores["probes"])
    return make_trainer(sources, "sancl", run_dir, [*SMALL, *overrides], dataset_wrapper, seed)


def test_resume_after_a_crash_reproduces_the_state(stores, tmp_path):
    settings = ["train.epochs=3", "train.lr=0.003", "train.checkpoint_every_steps=1",
                "model.embedding_dropout=0.3"]   # dropout: the restored RNG matters
    whole = _trainer(stores, tmp_path / "whole", settings)
    whole.fit()
    # crash in the middle of the second epoch, after 6 batches of 32 rows
    crashing = _trainer(stores, tmp_path / "crash", settings, crashing_after(6 * 32 + 5))
    with pytest.raises(Crash):
        crashing.fit()
    saved = checkpoints.load(tmp_path / "crash" / "checkpoints" / "last.pt")["state"]
    assert saved["global_step"] == 6 and 0 < saved["step_in_epoch"]
    resumed = _trainer(stores, tmp_path / "crash", settings, seed=123)   # other init: loaded
    state = resumed.fit()
    assert state.global_step == whole.state.global_step
    assert comparable(state.history) == comparable(whole.state.history)
    for key, value in whole.unwrapped.state_dict().items():
        assert torch.equal(value, resumed.unwrapped.state_dict()[key]), key


def test_early_stopping_stops_and_keeps_the_best_epoch(stores, tmp_path):
    frozen = _trainer(stores, tmp_path / "frozen", ["train.epochs=10", "train.lr=0.0",
                                                    "train.early_stopping_patience=2"])
    state = frozen.fit()
    assert state.stopped_early and state.epoch == 3 and state.best_epoch == 1

    moving = _trainer(stores, tmp_path / "moving", ["train.epochs=5", "train.lr=0.01",
                                                    "train.monitor=ndcg@3",
                                                    "train.early_stopping_patience=0"])
    state = moving.fit()
    values = [r["dev_ndcg@3"] for r in state.history]
    assert state.best_epoch == int(np.argmax(values)) + 1 and not state.stopped_early
    assert moving.load_best() == state.best_epoch
    # the same weights scored again; NDCG is a float64 mean over the dev products' few terms
    assert moving.evaluate(moving.dev_set)["ndcg@3"] == pytest.approx(
        max(values), rel=sum_rtol(16, eps=EPS64))


def test_epoch_checkpoints_off_keeps_only_best_and_last(stores, tmp_path):
    trainer = _trainer(stores, tmp_path / "run", ["train.epochs=2",
                                                  "train.epoch_checkpoints=false"])
    trainer.fit()
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["best.pt", "last.pt"]


def test_resume_from_a_last_checkpoint_of_another_shape_names_the_file(stores, tmp_path):
    _trainer(stores, tmp_path / "run", ["train.epochs=1"]).fit()
    wider = _trainer(stores, tmp_path / "run", ["train.epochs=2", "model.text_hidden=24"])
    with pytest.raises(InputError) as refused:
        wider.fit()
    message = refused.value.format_message()
    assert "last.pt" in message and "does not fit" in message


def test_predict_matches_the_run_and_remaps_a_new_vocabulary(trained, stores, tmp_path):
    from pathlib import Path

    run = Path(trained["path"])
    out, summary = predict(run, split="test", output=tmp_path / "same.jsonl", device="cpu")
    ours = read_predictions(out)
    reference = read_predictions(run / "predictions-test.jsonl")
    # the same weights run again, maybe batched otherwise: rounding only, within the bound of
    # the model's widest sum (train_fixtures.widest_sum), relative to the scores' size
    rtol = network_rtol(widest_sum(yaml.safe_load((run / "config.yaml").read_text()), 8, 8))
    assert_close_in_scale(ours["score"], reference["score"], rtol, what="scores")
    assert summary["products"] == 2
    # the same products embedded again with a vocabulary of their own
    other = write_text_store(tmp_path / "text", stores["manifest"], dim=8, seed=9,
                             vocab_splits=("train", "dev", "test"))
    remapped, _ = predict(run, text=other, split="test", output=tmp_path / "other.jsonl",
                          device="cpu")
    assert_close_in_scale(read_predictions(remapped)["score"], reference["score"], rtol,
                          what="remapped scores")


def test_predict_ranks_products_never_seen_in_training(trained, tmp_path, runner):
    raw = planted_release(tmp_path / "raw", products_per_split=(1, 1, 2), seed=4)
    new = ingest(raw, dataset="amazon", category="home", labels="raw", name="new",
                 cache_dir=tmp_path / "cache").path
    new_stores = stores_for(new, tmp_path / "stores", text_dim=8, roi_dim=8,
                            vocab_splits=("train", "dev", "test"))
    products = pd.read_parquet(new / "products.parquet")["product_id"].tolist()[-2:]
    args = ["predict", "--run", trained["path"], "--manifest", str(new),
            "--text", str(new_stores["text"]), "--rois", str(new_stores["rois"]),
            "--probes", str(new_stores["probes"]), "--output", str(tmp_path / "new.jsonl"),
            "--device", "cpu"]
    for product in products:
        args += ["--product", product]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(tmp_path / "new.jsonl")
    rows = read_predictions(tmp_path / "new.jsonl")
    assert sorted(rows["product_id"].unique()) == sorted(products)
    assert len(rows) == 16 and np.isfinite(rows["score"]).all()
    result = runner.invoke(cli, ["predict", "--run", trained["path"], "--product", "NOPE"])
    assert result.exit_code == 3 and "NOPE" in result.output


def _random_ranking_metrics(frame, threshold, repeats=200, seed=0):
    rng = np.random.default_rng(seed)
    runs = [evaluate_rankings(frame.assign(score=rng.random(len(frame))), threshold).mean
            for _ in range(repeats)]
    return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}


def test_planted_signal_is_found(tmp_path):
    raw = planted_release(tmp_path / "raw", seed=1)
    manifest = ingest(raw, dataset="amazon", category="home", labels="raw", name="planted",
                      cache_dir=tmp_path / "cache").path
    planted = stores_for(manifest, tmp_path / "stores", text_dim=16, roi_dim=8)
    result = train(manifest=manifest, rois=planted["rois"], text=planted["text"],
                   probes=planted["probes"], cache_dir=tmp_path / "cache", device="cpu",
                   overrides=[*SMALL, "train.epochs=6", "train.lr=0.003"], show_progress=False)
    test = read_predictions(result.path / "predictions-test.jsonl")
    model = result.metrics["test"]
    chance = _random_ranking_metrics(test, threshold=1)

    assert model["products"] == 8
    assert model["map"] > chance["map"] + 0.2, (model, chance)
    assert model["ndcg@3"] > chance["ndcg@3"] + 0.25, (model, chance)


def test_resume_option_finishes_an_unfinished_run_folder(trained, runner, tmp_path):
    import shutil
    from pathlib import Path

    copy = tmp_path / "copy"
    shutil.copytree(trained["path"], copy)
    (copy / "MANIFEST.json").unlink()
    for name in ("metrics.json", "predictions-test.jsonl"):
        (copy / name).unlink()
    result = runner.invoke(cli, ["train", "--resume", str(copy), "--device", "cpu",
                                 "--num-workers", "0"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(copy)
    assert "resuming from" in result.stderr
    original = json.loads((Path(trained["path"]) / "metrics.json").read_text())
    resumed = json.loads((copy / "metrics.json").read_text())
    assert resumed["test"] == original["test"] and resumed["best_epoch"] == original["best_epoch"]


def test_resume_refuses_a_run_whose_config_predates_a_setting(trained, runner, tmp_path):
    """A run started before model.contrastive_reduction existed averaged its contrastive
    terms; resuming it under today's default (sum) would change its loss mid-run."""
    import shutil

    import yaml

    copy = tmp_path / "old"
    shutil.copytree(trained["path"], copy)
    (copy / "MANIFEST.json").unlink()
    config = yaml.safe_load((copy / "config.yaml").read_text())
    del config["model"]["contrastive_reduction"]
    (copy / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for dry in ([], ["--dry-run"]):       # --dry-run refuses what train refuses
        result = runner.invoke(cli, ["train", "--resume", str(copy), "--device", "cpu", *dry])
        assert result.exit_code == 3, result.output
        assert "model.contrastive_reduction" in result.output and "older version" in result.output


def _damaged_copy(trained, tmp_path, name: str, text: str | None = None, edit=None):
    """A copy of the trained run with one file of its folder replaced by `text`, or its
    config.yaml changed by `edit(config)`."""
    import shutil
    from pathlib import Path

    copy = tmp_path / name.replace(".", "-")
    shutil.copytree(trained["path"], copy)
    if edit is not None:
        config = yaml.safe_load((copy / "config.yaml").read_text())
        edit(config)
        (copy / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    else:
        (copy / name).write_text(text)
    assert Path(trained["path"]).is_dir()
    return copy


@pytest.mark.parametrize("name,text,edit,argv,words", [
    ("metrics.json", '{"model": "sancl", "dev": {"map": 0.5', None, ["compare", "{run}"],
     ("metrics.json", "is not JSON")),
    ("metrics.json", "[1, 2]", None, ["report", "{run}"], ("metrics.json", "JSON object")),
    ("config.yaml", None, lambda c: c.pop("inputs"), ["predict", "--run", "{run}", "--split",
                                                       "test"], ("config.yaml", "inputs")),
    ("config.yaml", None, lambda c: c["model"].pop("name"), ["compare", "{run}"],
     ("config.yaml", "model.name")),
    ("config.yaml", None, lambda c: c["inputs"].pop("probes"), ["train", "--resume", "{run}"],
     ("config.yaml", "probes")),
    ("input-files.json", "{not json", None, ["train", "--resume", "{run}", "--device", "cpu"],
     ("input-files.json", "damaged")),
])
def test_a_damaged_run_file_is_named_not_a_crash(trained, runner, tmp_path, name, text, edit,
                                                 argv, words):
    """config.yaml without the keys a run writes, or a metrics.json or input-files.json that
    is not what train wrote: exit 3 naming the file (a KeyError or JSONDecodeError was exit 1).
    """
    copy = _damaged_copy(trained, tmp_path, name, text, edit)
    if argv[0] == "train":
        (copy / "MANIFEST.json").unlink()             # an unfinished run, to resume
    result = runner.invoke(cli, [arg.format(run=copy) for arg in argv])
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output, (word, result.output)


def test_best_is_copied_where_the_disk_has_no_hard_links(tmp_path, monkeypatch):
    """Without hard links (some network and FAT file systems) best.pt is a copy, written
    atomically like every checkpoint."""
    import os

    written = tmp_path / "epoch-001.pt"
    checkpoints.save(written, {"model": {"w": torch.ones(3)}, "record": {"epoch": 1}})

    def no_links(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    checkpoints.save_as(tmp_path / "best.pt", written)
    assert not (tmp_path / "best.pt").samefile(written)
    assert checkpoints.load(tmp_path / "best.pt")["record"] == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "epoch-001.pt"]


class NotAState:
    """An arbitrary object: loading it would need unpickling code."""


@pytest.mark.parametrize("content", ["garbage", "pickled-object", "other-format"])
def test_unreadable_checkpoints_are_refused_with_the_file_named(tmp_path, content):
    path = tmp_path / "last.pt"
    if content == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif content == "pickled-object":
        torch.save({"format_version": checkpoints.FORMAT_VERSION, "model": NotAState()}, path)
    else:
        torch.save({"format_version": checkpoints.FORMAT_VERSION + 1, "model": {}}, path)
    with pytest.raises(InputError) as caught:
        checkpoints.load(path)
    assert str(path) in str(caught.value) and "delete it" in str(caught.value)
