"""SANCL: selective attention, pooling, contrastive terms, and a few training steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mrhp_prep.train.settings.config import resolve_config
from mrhp_prep.train.data.dataset import Collate, DataConfig, FeatureSources, ReviewDataset
from mrhp_prep.train.models import build_model
from mrhp_prep.train.models.base import ModelInputs
from mrhp_prep.train.models.layers import SelfAttention
from mrhp_prep.train.models.sancl import info_nce
from mrhp_prep.train.loop.trainer import Trainer, to_device
from tolerances import assert_close_in_scale, network_rtol, sum_rtol
from train_fixtures import one_torch_thread, sample_stores, widest_sum  # noqa: F401

SMALL = ["model.text_hidden=16", "model.image_hidden=8", "model.shared_hidden=8",
         "model.embedding_dropout=0.0"]


def _model_and_batch(stores, overrides=(), text_only=False, split="train", rows=None):
    sources = FeatureSources(stores["manifest"], rois=None if text_only else stores["rois"],
                             text=stores["text"], probes=stores["probes"])
    config = resolve_config("sancl", overrides=[*SMALL, *overrides])
    torch.manual_seed(0)
    model = build_model("sancl", config["model"], sources.model_inputs())
    dataset = ReviewDataset(sources, sources.split(split), DataConfig())
    items = [dataset[i] for i in (rows if rows is not None else range(len(dataset)))]
    batch = to_device(Collate(DataConfig())(items), torch.device("cpu"))   # float32, as trained
    return model, batch, config


def test_selective_attention_reweights_every_pair():
    torch.manual_seed(0)
    attention = SelfAttention(4)
    h = torch.randn(1, 3, 4)
    mask = torch.tensor([[True, True, False]])
    weights = torch.tensor([[1.0, 0.3, 0.0]])
    out = attention(h, mask, weights)
    q, k = attention.query(h[0]), attention.key(h[0])
    scores = (q @ k.T) / 2.0
    a = torch.softmax(scores[:, :2], dim=-1)                   # keys: the two real tokens
    a_prime = torch.outer(weights[0, :2], weights[0, :2]) * a[:2]
    expected = h[0, :2] + a_prime @ h[0, :2]
    # float32 both ways in other orders: 4-term dot products, a 2-term softmax and a 2-term
    # weighted sum plus the residual (10 roundings), of values up to 2 * max |h| (a' <= 1)
    assert_close_in_scale(out[0, :2], expected, sum_rtol(10), 2 * float(h.abs().max()))
    assert torch.all(out[0, 2] == 0)                            # padding stays zero


def test_probe_weights_are_one_and_beta(stores):
    model, batch, _ = _model_and_batch(stores, ["model.probe_beta=0.25"], split="dev")
    probe = batch["review_probe"]
    mask = batch["review_text_mask"]
    weights, beta = model._probe_weights(batch, torch.zeros(len(probe), 16), mask)
    expected = torch.where(probe > 0, 1.0, 0.25) * mask
    assert torch.equal(weights, expected)      # 1, 0.25 and 0 are exact in float32
    learned, _, _ = _model_and_batch(stores, split="dev")
    _, beta = learned._probe_weights(batch, torch.randn(len(probe), 16), mask)
    assert beta.shape == (len(probe), 1) and ((beta > 0) & (beta < 1)).all()
    assert beta.std() > 0                                       # one beta per review


def test_scores_ignore_padding_and_missing_image_rows(stores):
    model, batch, config = _model_and_batch(stores, split="dev")
    model.eval()
    with torch.no_grad():
        before = model(batch).score
        changed = dict(batch)
        for key in ("review_image", "product_image"):
            noise = torch.randn_like(batch[key]) * 5
            changed[key] = torch.where(batch[f"{key}_mask"][..., None], batch[key], noise)
        for key in ("review_text", "product_text"):
            changed[key] = torch.where(batch[f"{key}_mask"], batch[key],
                                       torch.randint_like(batch[key], 2, 20))
        after = model(changed).score
    # padding and missing rows are masked out, so the same sums are taken: equal but for the
    # rounding a rerun may change (BLAS kernels chosen by memory alignment)
    assert_close_in_scale(after, before, network_rtol(widest_sum(config, 8, 8)),
                          what="scores")
    no_image = ~batch["review_image_mask"].any(1)
    assert no_image.any() and (~no_image).any()


def test_contrastive_terms_and_text_only_variant(stores):
    model, batch, config = _model_and_batch(stores)
    output = model(batch)
    assert output.score.shape == batch["label"].shape
    assert set(output.logs) >= {"cpc_pr_t", "cpc_pr_v", "cpc_ii", "beta"}
    terms = output.logs["cpc_pr_t"] + output.logs["cpc_pr_v"] + output.logs["cpc_ii"]
    # three float32 terms summed and scaled, against float64: 4 roundings of their size
    assert output.aux_loss.item() == pytest.approx(config["model"]["kappa"] * terms,
                                                   rel=sum_rtol(4))
    text_only, batch_t, _ = _model_and_batch(stores, text_only=True)
    out_t = text_only(batch_t)
    assert "review_image" not in batch_t
    assert set(out_t.logs) == {"cpc_pr_t", "beta"}
    assert text_only.output.in_features == 2 * 8 and model.output.in_features == 4 * 8
    assert text_only.num_parameters() < model.num_parameters()


def test_info_nce_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])   # cosines 1, 0, -1
    positive = torch.tensor([True, False, False])
    expected = -(1 / 0.5 - math.log(math.exp(2) + math.exp(0) + math.exp(-2)))
    # float32 cosines (2-d: 2 + 2 + 2 roundings) and a log-sum-exp of 3 terms: 9 roundings
    # of the terms' size (|1 / 0.5| + |log(...)| < 5)
    assert_close_in_scale(info_nce(a, b, positive, 0.5).item(), expected, sum_rtol(9), 5.0)
    assert info_nce(a[:1], b[:1], positive[:1], 1.0) is None      # one pair: no contrast
    assert info_nce(a, b, torch.zeros(3, dtype=torch.bool), 1.0) is None


def test_paper_size_parameter_count_leaves_out_embeddings():
    config = resolve_config("sancl")
    vectors = np.zeros((1000, 300), np.float32)
    model = build_model("sancl", config["model"],
                        ModelInputs("static", 300, vectors, vectors, 2048, True))
    embeddings = 2 * 1000 * 300
    assert model.num_parameters(exclude_embeddings=False) == model.num_parameters()  # frozen
    model.product_tokens.embedding.weight.requires_grad_(True)
    model.review_tokens.embedding.weight.requires_grad_(True)
    assert model.num_parameters(exclude_embeddings=False) - model.num_parameters() == embeddings
    # the paper's architecture at GloVe 300-d (each part counted in test_models_sancl.py)
    assert model.num_parameters() == 1_303_682


@pytest.mark.parametrize("text_only", [False, True], ids=["multimodal", "text-only"])
def test_a_few_epochs_on_the_sample_lower_the_loss(stores, tmp_path, text_only):
    sources = FeatureSources(stores["manifest"], rois=None if text_only else stores["rois"],
                             text=stores["text"], probes=stores["probes"])
    config = resolve_config("sancl", overrides=[*SMALL, "train.lr=0.01", "train.epochs=10",
                                                "train.early_stopping_patience=0"])
    torch.manual_seed(0)
    model = build_model("sancl", config["model"], sources.model_inputs())
    data = DataConfig.from_config(config["data"])
    trainer = Trainer(model, ReviewDataset(sources, sources.split("train"), data),
                      ReviewDataset(sources, sources.split("dev"), data), config, tmp_path,
                      device=torch.device("cpu"), relevance_threshold=1, show_progress=False)
    state = trainer.fit()
    losses = [r["rank_loss"] for r in state.history]
    assert len(losses) == 10
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    assert all(np.isfinite(r["aux_loss"]) for r in state.history)


def test_contrastive_terms_sum_over_the_positives_as_equations_11_12():
    """Four pairs, two positives, τ = 1: eq. 12 written out with math."""
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [4.0, 3.0]])   # cosines 1, 0, -1, .96
    positive = torch.tensor([True, False, False, True])
    denominator = math.exp(1) + math.exp(0) + math.exp(-1) + math.exp(0.96)
    by_hand = -(math.log(math.exp(1) / denominator) + math.log(math.exp(0.96) / denominator))
    # float32 cosines (2-d, 6 roundings), a log-sum-exp of 4 terms, two positives: 12
    # roundings of the terms' size (each |log ...| < 3)
    assert_close_in_scale(info_nce(a, b, positive, 1.0).item(), by_hand, sum_rtol(12), 6.0)
    assert_close_in_scale(info_nce(a, b, positive, 1.0, "mean").item(), by_hand / 2,
                          sum_rtol(12), 3.0)


def test_the_model_sums_by_default_and_averages_on_request(stores):
    summed, batch, config = _model_and_batch(stores)
    assert config["model"]["contrastive_reduction"] == "sum"
    averaged, _, _ = _model_and_batch(stores, ["model.contrastive_reduction=mean"])
    helpful = int((batch["label"] > config["model"]["relevance_threshold"]).sum())
    assert helpful >= 2
    total, mean = summed(batch).logs["cpc_pr_t"], averaged(batch).logs["cpc_pr_t"]
    # a float32 sum of `helpful` positive terms against their float32 mean times the count
    assert total == pytest.approx(helpful * mean, rel=sum_rtol(helpful + 2))
    with pytest.raises(Exception, match="contrastive_reduction"):
        _model_and_batch(stores, ["model.contrastive_reduction=median"])
