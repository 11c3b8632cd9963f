"""Training runs that fine-tune a real transformer (MiniLM) inside the models, from an
embed-text ids store: which weights train and with what rates, checkpoints and resumption,
prediction, two processes. The encoder module itself: test_models_text_encoder.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_stores import planted_release, write_text_store
from finetune_fixtures import SMALL, ids_sources, ids_stores, layer_of, minilm_path  # noqa: F401
from tolerances import assert_close_in_scale, network_rtol
from mrhp_prep.errors import InputError
from mrhp_prep.train.loop import checkpoints
from mrhp_prep.train.settings.config import resolve_config
from mrhp_prep.train.run import predict, train
from stage_edits import record_again
from train_fixtures import (Crash, comparable, crashing_after, make_trainer,  # noqa: F401
                            one_torch_thread, sample_stores)

REPO = Path(__file__).resolve().parents[1]


def test_token_ids_beyond_the_encoder_vocabulary_are_refused_before_training(ids_stores,
                                                                             tmp_path):
    """A store tokenized for a model with a larger vocabulary: a clear error naming the shard
    and row, not an index error inside the embedding lookup, and no run folder left."""
    import shutil

    import pyarrow as pa

    text = Path(shutil.copytree(ids_stores["text"], tmp_path / "text"))
    shard = sorted(text.glob("review-*.arrow"))[0]
    with pa.OSFile(str(shard), "rb") as source:       # embed-text writes an IPC stream
        table = pa.ipc.open_stream(pa.BufferReader(source.read())).read_all()
    ids = table.column("token_ids").to_pylist()
    ids[0] = [ids[0][0], 10**6, *ids[0][2:]]
    column = table.schema.get_field_index("token_ids")
    table = table.set_column(column, table.schema.field(column),
                             pa.array(ids, table.schema.field(column).type))
    with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    record_again(text, shard.name)     # as if the stage had written it: its check passes
    with pytest.raises(InputError, match="outside the vocabulary of the text encoder") as error:
        train(manifest=ids_stores["manifest"], text=text, out=tmp_path / "run", device="cpu",
              show_progress=False, overrides=SMALL)
    assert shard.name in str(error.value) and "row 0" in str(error.value)
    assert not (tmp_path / "run").exists()


TINY = {"sancl": SMALL,
        "mcl": ["model.hidden_dim=8", "model.image_layers=1", "model.image_heads=2",
                "model.image_ffn_dim=16", "model.interaction_layers=2", "model.fusion_heads=2",
                "model.fusion_ffn_dim=16"],
        "mmss": ["model.hidden_dim=16", "model.task_dim=16", "model.image_ffn_dim=16",
                 "model.interaction_ffn_dim=16", "model.subtask_mlp_hidden=8"]}


def test_two_parameter_groups_with_their_learning_rates(ids_stores, tmp_path):
    trainer = make_trainer(ids_sources(ids_stores), "mmss", tmp_path, TINY["mmss"])
    groups = trainer.optimizer.param_groups
    assert [g["lr"] for g in groups] == [1e-4, 5e-5]
    encoder = trainer.unwrapped.product_tokens.encoder
    assert encoder is trainer.unwrapped.review_tokens.encoder
    trained = {id(p) for n, p in encoder.transformer.named_parameters()
               if not n.startswith("pooler.")}                     # embeddings train too
    assert {id(p) for p in groups[1]["params"]} == trained
    rest = {id(p) for p in trainer.unwrapped.parameters()} - {id(p) for p in encoder.parameters()}
    assert {id(p) for p in groups[0]["params"]} == rest


# -- training ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["sancl", "mcl", "mmss"])
def test_every_model_trains_its_encoder_from_the_ranking_loss(ids_stores, tmp_path, model):
    trainer = make_trainer(ids_sources(ids_stores), model, tmp_path,
                           [*TINY[model], "model.finetune_layers=1"])
    batch = next(iter(trainer.loader))
    losses = trainer.train_step(batch)
    assert np.isfinite(losses["loss"])
    encoder = trainer.unwrapped.review_tokens.encoder
    grads = [p.grad for p in encoder.parameters() if p.requires_grad]
    assert grads and all(g is not None and bool(g.abs().sum() > 0) for g in grads)
    assert all(p.grad is None for p in encoder.parameters() if not p.requires_grad)


@pytest.mark.slow
def test_mmss_checkpoint_without_frozen_layers_restores_encoder_and_pseudo_labels(ids_stores,
                                                                                  tmp_path):
    """A checkpoint that leaves the frozen encoder layers out still carries MM-SS's
    pseudo-label state; loaded into a fresh model, every tensor comes back."""
    trainer = make_trainer(ids_sources(ids_stores), "mmss", tmp_path,
                           [*TINY["mmss"], "model.finetune_layers=1"])
    for batch in trainer.loader:
        trainer.train_step(batch)
    trainer.unwrapped.on_epoch_end(1)
    saved = checkpoints.model_state(trainer.unwrapped)
    assert not any(".transformer.embeddings." in k or ".layer.0." in k for k in saved)
    assert bool(saved["state.known"].any()) and int(saved["state.epochs_done"]) == 1
    fresh = make_trainer(ids_sources(ids_stores), "mmss", tmp_path / "fresh",
                         [*TINY["mmss"], "model.finetune_layers=1"], seed=7).unwrapped
    checkpoints.load_model_state(fresh, saved)
    for key, value in trainer.unwrapped.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, fresh.state_dict()[key]), key


@pytest.mark.slow
def test_frozen_layers_stay_bit_identical_and_the_last_ones_change(ids_stores, minilm_path,
                                                                   tmp_path):
    trainer = make_trainer(ids_sources(ids_stores), "sancl", tmp_path,
                           [*SMALL, "train.epochs=1", "train.encoder_lr=0.001",
                            "model.finetune_layers=2"], preset="bert-home")
    encoder = trainer.unwrapped.product_tokens.encoder.transformer
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    trainer.fit()
    after = encoder.state_dict()
    # the epoch records both rates (the plateau schedule scales both)
    assert (trainer.state.history[0]["lr"], trainer.state.history[0]["encoder_lr"]) == (2e-5, 1e-3)
    for name, value in before.items():
        layer = layer_of(name)
        if layer is not None and layer >= 4:
            assert not torch.equal(value, after[name]), f"{name} did not train"
        else:
            assert torch.equal(value, after[name]), f"{name} changed while frozen"

    # checkpoints hold the trained layers and the base model's identity, not the frozen rest
    best = checkpoints.load(tmp_path / "checkpoints" / "best.pt")["model"]
    stored = [k for k in best if ".encoder.transformer." in k]
    assert stored and all(layer_of(k.split(".transformer.")[1]) in (4, 5) for k in stored)
    identity = best["product_tokens.encoder._extra_state"]
    assert identity["base_model"] == minilm_path and len(identity["base_sha256"]) == 64
    # a checkpoint of another base model is refused
    best["review_tokens.encoder._extra_state"] = {**identity, "base_sha256": "0" * 64}
    best["product_tokens.encoder._extra_state"] = best["review_tokens.encoder._extra_state"]
    fresh = make_trainer(ids_sources(ids_stores), "sancl", tmp_path / "other", SMALL,
                         preset="bert-home")
    with pytest.raises(InputError, match="weights differ"):
        checkpoints.load_model_state(fresh.unwrapped, best)


@pytest.mark.slow
def test_loss_falls_on_the_planted_signal(minilm_path, tmp_path):
    from mrhp_prep.data.ingest import ingest
    from mrhp_prep.text.embed import embed_text

    raw = planted_release(tmp_path / "raw", products_per_split=(12, 3, 3), seed=1)
    manifest = ingest(raw, dataset="amazon", category="home", labels="raw", name="planted",
                      cache_dir=tmp_path / "cache").path
    text = embed_text(manifest, mode="ids", model=minilm_path, max_length=24,
                      cache_dir=tmp_path / "cache").path
    result = train(manifest=manifest, text=text, out=tmp_path / "run", device="cpu",
                   show_progress=False, preset="bert-home",
                   overrides=[*SMALL, "train.epochs=5", "train.lr=0.003", "train.encoder_lr=1e-4",
                              "model.kappa=0"])
    losses = [r["rank_loss"] for r in result.metrics["epochs"]]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.slow
def test_resume_after_a_crash_equals_an_uninterrupted_run(ids_stores, tmp_path):
    settings = [*SMALL, "train.epochs=2", "train.checkpoint_every_steps=1",
                "train.encoder_lr=0.001", "model.finetune_layers=1"]   # dropout 0.5: RNG matters
    sources = ids_sources(ids_stores)
    whole = make_trainer(sources, "sancl", tmp_path / "whole", settings, preset="bert-home")
    whole.fit()
    steps = whole.state.global_step // 2
    crashing = make_trainer(sources, "sancl", tmp_path / "crash", settings,
                            crashing_after(steps * 32 + 5), preset="bert-home")
    with pytest.raises(Crash):
        crashing.fit()
    saved = checkpoints.load(tmp_path / "crash" / "checkpoints" / "last.pt")["state"]
    assert saved["global_step"] == steps > 0
    resumed = make_trainer(sources, "sancl", tmp_path / "crash", settings, seed=123,
                           preset="bert-home")
    state = resumed.fit()
    assert state.global_step == whole.state.global_step
    assert comparable(state.history) == comparable(whole.state.history)
    for key, value in whole.unwrapped.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, resumed.unwrapped.state_dict()[key]), key


@pytest.mark.slow
def test_predict_on_a_fine_tuned_run_gives_the_run_s_scores(ids_stores, minilm_path,
                                                             tmp_path):
    result = train(manifest=ids_stores["manifest"], rois=ids_stores["rois"],
                   text=ids_stores["text"], probes=ids_stores["probes"], out=tmp_path / "run",
                   device="cpu", show_progress=False, overrides=[*SMALL, "train.epochs=1"])
    output, summary = predict(result.path, split="test", device="cpu",
                              output=tmp_path / "again.jsonl")
    ours = {r["review_id"]: r["score"] for r in map(json.loads, open(output))}
    run = {r["review_id"]: r["score"] for r in
           map(json.loads, open(result.path / "predictions-test.jsonl"))}
    assert ours.keys() == run.keys() and len(ours) == summary["reviews"] > 0
    # metrics.json names the weights each encoder started from, hashed as loaded
    from mrhp_prep.train.models.text_encoder import weights_sha256
    from transformers import AutoModel

    metrics = json.loads((result.path / "metrics.json").read_text())
    base = {"base_model": str(minilm_path),
            "base_sha256": weights_sha256(AutoModel.from_pretrained(minilm_path))}
    assert metrics["config"]["model"]["shared_encoder"] is True     # listed once
    assert metrics["text_encoders"] == {"product_tokens.encoder": base}
    # the same weights run again, maybe batched otherwise: rounding only, within the bound of
    # the widest sum, the fine-tuned MiniLM's 1536-wide feed-forward layer (tolerances.py)
    assert_close_in_scale([ours[k] for k in run], list(run.values()), network_rtol(1536),
                          what="scores")


@pytest.mark.slow
def test_torchrun_two_gloo_processes_fine_tune(ids_stores, minilm_path, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "mrhp_prep", "train",
               "--manifest", str(ids_stores["manifest"]), "--rois", str(ids_stores["rois"]),
               "--text", str(ids_stores["text"]), "--probes", str(ids_stores["probes"]),
               "--out", str(tmp_path / "ddp"), "--device", "cpu", "--num-workers", "0"]
    for setting in [*SMALL, "train.epochs=1", "train.encoder_lr=0.001"]:
        command += ["--set", setting]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    rows = [json.loads(line) for line in open(tmp_path / "ddp" / "predictions-test.jsonl")]
    assert len(rows) == metrics["test"]["reviews"] > 0
    assert all(np.isfinite(r["score"]) for r in rows)
    # both ranks trained the same encoder: the saved trained layers moved away from the base
    best = checkpoints.load(tmp_path / "ddp" / "checkpoints" / "best.pt")["model"]
    from transformers import AutoModel

    base = AutoModel.from_pretrained(minilm_path).state_dict()
    key = "encoder.layer.5.output.dense.weight"
    assert not torch.equal(best[f"product_tokens.encoder.transformer.{key}"], base[key])


def test_compare_puts_a_fine_tuned_run_beside_the_papers_bert_rows(ids_stores, tmp_path):
    """An ids store is a transformer (MM-SS's and SANCL+BERT's setting), never word vectors."""
    from mrhp_prep.train.report.compare import _describe
    from mrhp_prep.train.report.papers import paper_row

    config = resolve_config("mmss", text_mode="ids")
    described = _describe(config, {k: str(v) for k, v in ids_stores.items()})
    assert described["text"] == "bert" and described["variant"] == "full"
    row = paper_row("mmss", dataset="amazon", category="clothing", setting="multimodal",
                    text=described["text"])
    assert row is not None and row["map"] == 69.5
    # frozen features are neither paper's BERT setting: no row
    features = write_text_store(tmp_path / "features", ids_stores["manifest"], mode="features",
                                dim=16)
    frozen = _describe(resolve_config("mmss", text_mode="features"),
                       {**{k: str(v) for k, v in ids_stores.items()}, "text": str(features)})
    assert paper_row("mmss", dataset="amazon", category="clothing", setting="multimodal",
                     text=frozen["text"]) is None
    # a run whose text store was deleted since: its config still says what it trained on
    gone = _describe(config, {**{k: str(v) for k, v in ids_stores.items()},
                              "text": str(tmp_path / "deleted")})
    assert gone["text"] == "bert"

