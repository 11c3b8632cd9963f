"""The fine-tuned text encoder (a real MiniLM) and its settings, from an embed-text ids store.

The oracle for what the encoder hands a model is `transformers` itself run on each text
alone; which layers train is checked on the parameters of a built model. Training runs with
it: test_train_finetune.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from finetune_fixtures import SMALL, ids_sources, ids_stores, layer_of, minilm_path  # noqa: F401
from mrhp_prep.errors import InputError
from mrhp_prep.train.loop import checkpoints
from mrhp_prep.train.settings.config import resolve_config
from mrhp_prep.train.models import build_model
from mrhp_prep.train.models.text_encoder import FineTunedEncoder
from tolerances import assert_close_in_scale, network_rtol
from train_fixtures import one_torch_thread  # noqa: F401


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

    from mrhp_prep.train.data.dataset import DataConfig, ReviewDataset

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    sources = ids_sources(ids_stores)
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
            # other padding, other matrix shapes: rounding only, within the bound of the
            # transformer's widest reduction, its feed-forward layer's 1536 (tolerances.py)
            assert_close_in_scale(states[i, :len(row)], alone, network_rtol(1536),
                                  what=texts[i])
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
        top.register_forward_hook(lambda *_, count=count: count.__setitem__(0, count[0] + 1))
        torch.manual_seed(7)                                      # the same dropout masks
        encoder(ids, mask).pow(2).sum().backward()
        gradients.append({n: p.grad for n, p in encoder.named_parameters() if p.requires_grad})
        calls.append(count[0])
    assert calls == [1, 2]                         # checkpointed: run again in the backward
    assert gradients[0].keys() == gradients[1].keys() and gradients[0]
    for name, grad in gradients[0].items():
        # the same arithmetic run again (the same dropout masks); a rerun may round
        # differently (BLAS kernels chosen by memory alignment): the network's bound
        assert_close_in_scale(gradients[1][name], grad, network_rtol(1536), what=name)


def test_layers_that_train_and_the_shared_encoder(ids_stores):
    sources = ids_sources(ids_stores)
    config = resolve_config("sancl", text_mode="ids", preset="bert-home", overrides=SMALL)
    model = build_model("sancl", config["model"], sources.model_inputs())
    encoder = model.product_tokens.encoder
    assert encoder is model.review_tokens.encoder                 # one module, two fields
    assert sum(isinstance(m, FineTunedEncoder) for m in model.modules()) == 1
    for name, parameter in encoder.transformer.named_parameters():
        layer = layer_of(name)
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


def test_an_encoder_folder_that_is_gone_is_a_clear_error(ids_stores, tmp_path):
    import shutil

    moved = tmp_path / "text"
    shutil.copytree(ids_stores["text"], moved)
    manifest = json.loads((moved / "MANIFEST.json").read_text())
    manifest["tokenizer"]["model"] = str(tmp_path / "gone")
    (moved / "MANIFEST.json").write_text(json.dumps(manifest))
    sources = ids_sources({**ids_stores, "text": moved})
    config = resolve_config("sancl", text_mode="ids", overrides=SMALL)
    with pytest.raises(InputError, match="gone"):
        build_model("sancl", config["model"], sources.model_inputs())

