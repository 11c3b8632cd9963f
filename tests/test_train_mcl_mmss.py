"""MCL and MM-SS through the real trainer on the sample's feature stores: every ablation switch
trains (loss finite and going down), a crashed run resumes to the same weights and pseudo
labels, and `mrhp-prep train --model mcl|mmss` picks the model's own config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from feature_stores import stores_for, write_text_store
from mrhp_prep.cli import cli
from mrhp_prep.train.loop import checkpoints
from mrhp_prep.train.data.dataset import FeatureSources
from mrhp_prep.train.report.predictions import read_predictions
from mrhp_prep.train.models.mmss import SUBTASKS
from mrhp_prep.train.run import predict
from mrhp_prep.train.settings.config import model_defaults
from tolerances import assert_close_in_scale, network_rtol
from train_fixtures import (Crash, comparable, crashing_after, make_trainer,  # noqa: F401
                            one_torch_thread, widest_sum)

# Tiny widths: the point is the trainer's handling of each model, not accuracy.
TINY = {
    "mcl": ["model.hidden_dim=8", "model.image_layers=1", "model.image_heads=2",
            "model.image_ffn_dim=16", "model.interaction_layers=2", "model.fusion_heads=2",
            "model.fusion_ffn_dim=16"],
    "mmss": ["model.hidden_dim=8", "model.task_dim=8", "model.subtask_mlp_hidden=8",
             "model.image_layers=1", "model.image_heads=2", "model.image_ffn_dim=16",
             "model.interaction_heads=2", "model.interaction_ffn_dim=16"],
}
# Each paper's ablation switches (MCL Table 6, MM-SS Table 4) next to the full model.
CASES = {
    "mcl-full": ("mcl", []),
    "mcl-no-adaptive-weighting": ("mcl", ["model.adaptive_weighting=false"]),
    "mcl-no-contrastive": ("mcl", ["model.contrastive=false"]),
    "mcl-no-cross-modal": ("mcl", ["model.cross_modal_interaction=false"]),
    "mmss-full": ("mmss", []),
    "mmss-no-ptrt": ("mmss", ["model.subtasks=[pvrv,ptrv,pvrt,rtrv]"]),
    "mmss-no-pvrv": ("mmss", ["model.subtasks=[ptrt,ptrv,pvrt,rtrv]"]),
    "mmss-no-ptrv": ("mmss", ["model.subtasks=[ptrt,pvrv,pvrt,rtrv]"]),
    "mmss-no-pvrt": ("mmss", ["model.subtasks=[ptrt,pvrv,ptrv,rtrv]"]),
    "mmss-no-rtrv": ("mmss", ["model.subtasks=[ptrt,pvrv,ptrv,pvrt]"]),
    "mmss-no-module-d": ("mmss", ["model.subtasks=[]"]),
    "mmss-no-module-b": ("mmss", ["model.subtasks=[]", "model.interaction_modeling=false"]),
}


@pytest.fixture(scope="module")
def stores(sample_manifest, tmp_path_factory):
    """The sample's stores; `features` is a frozen-features text store (MM-SS's BERT input),
    `text` a static-vector one (MCL's GloVe input)."""
    root = tmp_path_factory.mktemp("stores")
    found = stores_for(sample_manifest, root, text_dim=8, roi_dim=8)
    found["features"] = write_text_store(root / "features", sample_manifest, mode="features",
                                         dim=8)
    return found


def _text_store(stores, model):
    return stores["text"] if model == "mcl" else stores["features"]


def _trainer(stores, model, run_dir, overrides, dataset_wrapper=None, seed=0):
    sources = FeatureSources(stores["manifest"], rois=stores["rois"],
                             text=_text_store(stores, model), probes=stores["probes"])
    return make_trainer(sources, model, run_dir, [*TINY[model], *overrides], dataset_wrapper, seed)


def _subtasks(overrides):
    for setting in overrides:
        if setting.startswith("model.subtasks="):
            return yaml.safe_load(setting.split("=", 1)[1])
    return list(SUBTASKS)


@pytest.mark.parametrize("case", list(CASES))
def test_every_ablation_trains_and_lowers_the_loss(stores, tmp_path, case):
    model, overrides = CASES[case]
    trainer = _trainer(stores, model, tmp_path, ["train.epochs=8", "train.lr=0.01",
                                                 "train.early_stopping_patience=0", *overrides])
    state = trainer.fit()
    history = state.history
    assert len(history) == 8 and history[0]["steps"] > 0
    for key in ("loss", "rank_loss", "aux_loss"):
        values = [r[key] for r in history]
        assert np.isfinite(values).all(), (key, values)
    for key in ("loss", "rank_loss"):
        values = [r[key] for r in history]
        assert np.mean(values[-3:]) < 0.6 * np.mean(values[:3]), (key, values)

    aux = [r["aux_loss"] for r in history]
    if model == "mcl":
        if "model.contrastive=false" in overrides:
            assert aux == [0.0] * 8 and "contrastive_loss" not in history[0]
        else:   # the contrastive loss is the aux loss the trainer adds (weight 1)
            # the same per-step numbers averaged the same way: equal
            assert all(r["contrastive_loss"] == r["aux_loss"] for r in history)
            assert any(a != 0 for a in aux)
        return
    subtasks = _subtasks(overrides)
    logged = {k[len("subtask_loss_"):] for k in history[0] if k.startswith("subtask_loss_")}
    assert logged == set(subtasks)
    unwrapped = trainer.unwrapped
    if not subtasks:
        assert aux == [0.0] * 8 and unwrapped.state is None
        return
    # the trainer's epoch ends drive SSP-Label: one EWMA step per epoch, labels moved off y_g
    pseudo = unwrapped.state
    assert int(pseudo.epochs_done) == 8 and bool(pseudo.anchor_ready.all())
    table = trainer.train_set.table
    known = pseudo.known[:len(table)].numpy()
    assert known.any()
    labels = torch.as_tensor(table.labels[known], dtype=torch.float32)
    moved = (pseudo.pseudo_label[:len(table)][known] - labels[:, None]).abs()
    assert moved.max() > 1e-3 and torch.isfinite(pseudo.pseudo_label).all()


def _assert_same(a, b, where="optimizer"):
    """Nested dicts/lists of tensors and numbers, equal exactly."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("case", ["mcl-full", "mcl-no-cross-modal", "mmss-full", "mmss-no-pvrv",
                                  "mmss-no-module-b"])
def test_resume_after_a_crash_reproduces_the_state(stores, tmp_path, case):
    model, overrides = CASES[case]
    # dropout on: the restored random states matter
    settings = ["train.epochs=3", "train.lr=0.005", "train.checkpoint_every_steps=1",
                "train.early_stopping_patience=0", *overrides]
    whole = _trainer(stores, model, tmp_path / "whole", settings)
    whole.fit()
    steps_per_epoch = whole.state.history[0]["steps"]
    # crash in the middle of the second epoch, after the epoch-1 end has set MM-SS's anchors
    crash_step = steps_per_epoch + steps_per_epoch // 2
    crashing = _trainer(stores, model, tmp_path / "crash", settings,
                        crashing_after(crash_step * 32 + 5))
    with pytest.raises(Crash):
        crashing.fit()
    saved = checkpoints.load(tmp_path / "crash" / "checkpoints" / "last.pt")
    assert saved["state"]["global_step"] == crash_step and saved["state"]["epoch"] == 1
    resumed = _trainer(stores, model, tmp_path / "crash", settings, seed=123)  # other init
    state = resumed.fit()
    assert state.global_step == whole.state.global_step == 3 * steps_per_epoch
    assert comparable(state.history) == comparable(whole.state.history)
    expected, got = whole.unwrapped.state_dict(), resumed.unwrapped.state_dict()
    assert expected.keys() == got.keys()
    for key, value in expected.items():       # weights and MM-SS's pseudo-label buffers
        assert torch.equal(value, got[key]), key
    if model == "mmss" and whole.unwrapped.state is not None:
        assert "state.pseudo_label" in expected and int(expected["state.epochs_done"]) == 3
    _assert_same(resumed.optimizer.state_dict(), whole.optimizer.state_dict())   # Adam's moments


@pytest.mark.parametrize("model", ["mcl", "mmss"])
def test_model_option_picks_its_config_and_predict_rebuilds_it(stores, tmp_path, runner,
                                                               model):
    text = _text_store(stores, model)
    args = ["train", "--model", model, "--manifest", str(stores["manifest"]),
            "--rois", str(stores["rois"]), "--text", str(text), "--probes", str(stores["probes"]),
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--num-workers", "0"]
    for setting in [*TINY[model], "train.epochs=2"]:
        args += ["--set", setting]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    run = Path(result.stdout.strip().splitlines()[-1])
    config = yaml.safe_load((run / "config.yaml").read_text())
    defaults, _ = model_defaults(model)
    assert config["model"]["name"] == model and config["preset"] == "none"   # no presets
    assert set(config["model"]) == set(defaults["model"])
    assert config["loss"]["margin"] == 1.0                                    # the papers' margin
    if model == "mcl":
        assert config["model"]["relevance_threshold"] == 1                    # auto -> Amazon's
        assert config["model"]["interaction_layers"] == 2                     # --set wins
    else:
        assert config["model"]["subtasks"] == list(SUBTASKS)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["model"] == model and len(metrics["epochs"]) == 2
    assert metrics["parameters_without_embeddings"] > 0
    # predict builds a fresh model from config.yaml and loads best.pt into it (MM-SS: a
    # pseudo-label state sized from the checkpoint)
    out, summary = predict(run, split="test", output=tmp_path / "again.jsonl", device="cpu")
    # the same weights run again: rounding only (train_fixtures.widest_sum, tolerances.py)
    assert_close_in_scale(read_predictions(out)["score"],
                               read_predictions(run / "predictions-test.jsonl")["score"],
                          network_rtol(widest_sum(config, 8, 8)), what="scores")
    assert summary["reviews"] == metrics["test"]["reviews"]


def test_train_help_lists_the_three_models(runner):
    result = runner.invoke(cli, ["train", "--help"])
    assert result.exit_code == 0
    assert "[mcl|mmss|sancl]" in result.output.replace("\n", "").replace(" ", "")


def test_a_model_without_text_is_refused_with_the_fix(stores, tmp_path, runner):
    result = runner.invoke(cli, ["train", "--model", "mcl", "--manifest", str(stores["manifest"]),
                                 "--rois", str(stores["rois"]), "--cache-dir", str(tmp_path),
                                 "--device", "cpu", "--num-workers", "0"])
    assert result.exit_code == 3
    assert "--text" in result.output


def test_mmss_subtasks_stay_still_through_the_trainers_first_epoch(stores, tmp_path):
    """Epoch 1 trains on y_s = y_g (every subtask weight 0): with Adam and weight decay, no
    subtask parameter moves, log sigma^2 included; epoch 2 trains them (`same-epoch`
    timing; the default trains them from epoch 3, tested in test_models_ssp_label.py)."""
    trainer = _trainer(stores, "mmss", tmp_path, ["train.epochs=2", "train.weight_decay=0.01",
                                                  "train.lr=0.01",
                                                  "model.pseudo_label_timing=same-epoch"])
    model = trainer.unwrapped
    subtask = {n: p.detach().clone() for n, p in model.named_parameters()
               if n.startswith(("subtask_", "log_variance"))}
    shared = model.global_scorer.weight.detach().clone()
    trainer._train_epoch()
    trainer._end_epoch()
    params = dict(model.named_parameters())
    assert trainer.state.history[0]["aux_loss"] == 0.0
    for name, before in subtask.items():
        assert torch.equal(params[name], before), name
    assert not torch.equal(model.global_scorer.weight, shared)
    trainer._train_epoch()
    assert not torch.equal(params["log_variance.rtrv"], subtask["log_variance.rtrv"])
    assert not torch.equal(params["subtask_heads.rtrv.0.weight"],
                           subtask["subtask_heads.rtrv.0.weight"])
