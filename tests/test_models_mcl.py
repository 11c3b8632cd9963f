"""MCL: shapes, missing images, optimisation with every ablation, checkpoints, Theorem 1."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mrhp_prep.errors import InputError
from mrhp_prep.train.models.mcl import (MclModel, adaptive_contrastive_loss,
                                        contrastive_pair_similarities,
                                        hyperspherical_contrastive_loss)
from synthetic_batches import (NO_DROPOUT, SMALL_WIDEST, inputs_for, make_batch,
                               small_options, total_loss, without_images)
from train_fixtures import one_torch_thread  # noqa: F401
from tolerances import EPS64, assert_close_in_scale, network_rtol, sum_rtol

ABLATIONS = {
    "full": {},
    "no_adaptive_weighting": {"adaptive_weighting": False},
    "no_contrastive": {"contrastive": False},
    "no_cross_modal": {"cross_modal_interaction": False},
}


def build(text: str = "ids", images: bool = True, **overrides) -> MclModel:
    torch.manual_seed(0)
    return MclModel({**small_options(), **NO_DROPOUT, **overrides}, inputs_for(text, images))


@pytest.mark.parametrize("text", ["ids", "features"])
def test_forward_gives_one_score_per_row_and_a_scalar_contrastive_loss(text):
    batch = make_batch(text)
    out = build(text)(batch)
    assert out.score.shape == (12,)
    assert out.aux_loss.shape == ()
    assert torch.isfinite(out.aux_loss)
    assert out.logs["contrastive_loss"] == float(out.aux_loss.detach())   # the same number


@pytest.mark.parametrize("text,missing", [("ids", "all"), ("features", "all"), ("ids", "some")])
def test_items_without_images_give_finite_scores_losses_and_gradients(text, missing):
    model = build(text)
    batch = make_batch(text, missing_images=missing)
    loss = total_loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            assert torch.isfinite(parameter.grad).all(), name


@pytest.mark.parametrize("text,ablation",
                         [("ids", name) for name in sorted(ABLATIONS)] + [("features", "full")])
def test_a_few_adam_steps_lower_the_total_loss(text, ablation):
    model = build(text, **ABLATIONS[ablation])
    batch = make_batch(text)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        loss = total_loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(map(lambda v: v == v, losses))
    assert losses[-1] < losses[0] - 0.1, losses


def test_ablation_switches_change_the_model_they_name():
    full = build()
    no_cross, no_contrastive = build(cross_modal_interaction=False), build(contrastive=False)
    assert full.interaction is not None and no_cross.interaction is None
    assert no_cross.num_parameters() < full.num_parameters()
    batch = make_batch()
    assert no_contrastive(batch).aux_loss is None
    # Without adaptive weighting the loss is equation 32: -sum sim_pos + sum sim_neg.
    plain = build(adaptive_weighting=False)
    plain.load_state_dict(full.state_dict())
    assert not torch.allclose(plain(batch).aux_loss, full(batch).aux_loss)


def test_cross_modal_module_lets_review_images_shape_the_text_features():
    batch = make_batch(missing_images="none")
    changed = dict(batch, review_image=batch["review_image"] + 1.0)
    for enabled in (True, False):
        model = build(cross_modal_interaction=enabled).eval()
        before = model.encode(batch)["review_text"]
        after = model.encode(changed)["review_text"]
        if enabled:
            assert not torch.allclose(before, after)
        else:   # the same arithmetic again: within rounding (tolerances.network_rtol)
            assert_close_in_scale(after, before, network_rtol(SMALL_WIDEST))


def test_only_helpful_rows_enter_the_contrastive_loss():
    model = build(relevance_threshold=1.0).eval()
    batch = make_batch()
    unhelpful = (batch["label"] <= 1.0).nonzero().flatten()
    changed = dict(batch, review_text=batch["review_text"].clone())
    changed["review_text"][unhelpful] = torch.randint(2, 50,
                                                      changed["review_text"][unhelpful].shape)
    # the same sums over the same rows: the same number but for rounding
    assert_close_in_scale(model(changed).aux_loss, model(batch).aux_loss,
                          network_rtol(SMALL_WIDEST))
    every_row = build(relevance_threshold=None).eval()
    assert not torch.allclose(every_row(batch).aux_loss, every_row(changed).aux_loss)


def test_checkpoint_round_trip_reproduces_scores(tmp_path):
    model = build(text="ids").eval()
    batch = make_batch("ids", missing_images="some")
    path = tmp_path / "mcl.pt"
    torch.save(model.state_dict(), path)
    restored = MclModel({**small_options(), **NO_DROPOUT}, inputs_for("ids")).eval()
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(model(batch).score, restored(batch).score)
    assert torch.equal(model(batch).aux_loss, restored(batch).aux_loss)


def test_unknown_option_is_refused_with_the_known_ones_listed():
    with pytest.raises(InputError, match="hiden_dim(.|\n)*known options"):
        MclModel({"hiden_dim": 64}, inputs_for("features"))
    with pytest.raises(InputError, match="MCL reads product and review text"):
        MclModel({}, inputs_for("features").__class__(text_mode=None, text_dim=0))


# --------------------------------------------------------------------------- the loss


def test_pair_similarities_follow_the_positive_and_negative_definition():
    """Eq. 32: positives (t1_i, t2_i); negatives every (t1_j, t2_k), j != k, with both
    modalities present: rows 0 and 1 (one product) are a negative pair too, as in the paper
    ("modalities of distinct ones") and the released code."""
    torch.manual_seed(1)
    first, second = torch.randn(5, 7), torch.randn(5, 7)
    first_present = torch.tensor([True, True, True, False, True])
    second_present = torch.tensor([True, False, True, True, True])
    positive, negative = contrastive_pair_similarities(first, first_present, second,
                                                       second_present)
    cos = torch.nn.functional.cosine_similarity
    expected_positive = [cos(first[i], second[i], dim=0) for i in range(5)
                         if first_present[i] and second_present[i]]
    expected_negative = [cos(first[j], second[k], dim=0)
                         for j, k in itertools.product(range(5), range(5))
                         if j != k and first_present[j] and second_present[k]]
    assert len(expected_negative) == 4 * 4 - 3          # 4 rows x 4 rows present, j != k
    # cosines (at most 1 in size) of 7-d vectors, two float32 evaluations: a dot product and
    # two norms of 7 terms each, then a division: (7 + 7 + 2) * eps
    assert_close_in_scale(positive, torch.stack(expected_positive), sum_rtol(16), 1.0)
    assert_close_in_scale(negative, torch.stack(expected_negative), sum_rtol(16), 1.0)
    # the same-product pair (row 1, row 0) is among the negatives
    assert any(torch.isclose(negative, cos(first[1], second[0], dim=0)).tolist())


def test_same_product_pairs_are_negatives_in_the_model_loss():
    """Two helpful rows of one product: dropping the other rows leaves only same-product
    negatives, and the loss still counts them (it is not the positives' term alone)."""
    model = build(relevance_threshold=1.0).eval()
    batch = make_batch(missing_images="none")
    same_product = (batch["product_index"] == batch["product_index"][0]) & (batch["label"] > 1)
    assert int(same_product.sum()) >= 2
    rows = torch.nonzero(same_product).squeeze(1)
    one_product = {k: v[rows] for k, v in batch.items()}
    features = model.encode(one_product)
    names = ("product_text", "review_text", "product_image", "review_image")
    pooled = {n: torch.stack([features[n][i][features[f"{n}_mask"][i]].max(dim=0).values
                              for i in range(len(rows))]) for n in names}
    cos = torch.nn.functional.cosine_similarity
    positives_only = 0.0
    for a, b in itertools.combinations(names, 2):
        for j in range(len(rows)):
            sim = cos(pooled[a][j], pooled[b][j], dim=0).item()
            positives_only -= max(2.0 - sim, 0.0) * sim
    with_negatives = model(one_product).aux_loss.item()
    assert with_negatives != pytest.approx(positives_only, abs=1e-4)
    assert with_negatives > positives_only    # each negative adds [sim]_+ * sim >= 0


def test_theorem_1_adaptive_loss_equals_its_hyperspherical_form_up_to_c():
    """Eq. 33 = sum (s_p - o_p/2)^2 + sum (s_n - o_n/2)^2 - C, values and gradients."""
    generator = torch.Generator().manual_seed(3)
    for o_p, o_n in [(2.0, 0.0), (1.5, 0.2), (1.0, -0.5)]:
        # cosine similarities where no weight is clipped: s_p <= o_p, s_n >= o_n
        s_p = (torch.rand(6, generator=generator) * 2 - 1).clamp(max=o_p).requires_grad_()
        s_n = (o_n + torch.rand(20, generator=generator) * (1 - o_n)).requires_grad_()
        adaptive = adaptive_contrastive_loss(s_p, s_n, o_p, o_n)
        spherical, constant = hyperspherical_contrastive_loss(s_p, s_n, o_p, o_n)
        # float64 arithmetic on Python floats: 26 squares summed
        assert constant == pytest.approx(6 * (o_p / 2) ** 2 + 20 * (o_n / 2) ** 2,
                                         rel=sum_rtol(26, eps=EPS64))
        assert constant > 0
        # two float32 forms of one sum over 26 pairs, each term at most (|s| + |o|)^2 <= 9
        # in size: 26 * eps relative to 26 * 9; their gradients are single terms
        assert_close_in_scale(adaptive.item(), spherical.item(), sum_rtol(26), 26 * 9.0)
        grad_adaptive = torch.autograd.grad(adaptive, (s_p, s_n))
        grad_spherical = torch.autograd.grad(spherical, (s_p, s_n))
        for a, b in zip(grad_adaptive, grad_spherical):
            assert_close_in_scale(a, b, sum_rtol(4), 2 * 3.0)
        # the sphere form is smallest, -C, at s_p = o_p/2, s_n = o_n/2; with o_n <= 0 that
        # point has no clipped weight, so the adaptive loss reaches -C there too
        optimum_p, optimum_n = torch.full((6,), o_p / 2), torch.full((20,), o_n / 2)
        at_optimum, _ = hyperspherical_contrastive_loss(optimum_p, optimum_n, o_p, o_n)
        assert_close_in_scale(float(at_optimum), -constant, sum_rtol(26), 26 * 9.0)
        if o_n <= 0:
            assert_close_in_scale(float(adaptive_contrastive_loss(optimum_p, optimum_n, o_p,
                                                                  o_n)),
                                  -constant, sum_rtol(26), 26 * 9.0)


def test_theorem_1_needs_unclipped_negative_weights():
    """A negative pair below o_n has weight 0 in eq. 33 but (s - o_n/2)^2 > 0 in the sphere form."""
    s_p, s_n = torch.tensor([0.5]), torch.tensor([-0.4])
    adaptive = adaptive_contrastive_loss(s_p, s_n, 2.0, 0.0)
    spherical, _ = hyperspherical_contrastive_loss(s_p, s_n, 2.0, 0.0)
    # one or two float32 terms against float64: a few roundings of values below 1
    assert float(adaptive) == pytest.approx(-(2.0 - 0.5) * 0.5, abs=sum_rtol(4))
    assert float(spherical) - float(adaptive) == pytest.approx(0.4 ** 2, abs=sum_rtol(4))


def test_plain_contrastive_loss_is_equation_32():
    s_p, s_n = torch.tensor([0.9, 0.1]), torch.tensor([0.3, -0.2, 0.5])
    # five float32 terms below 1 summed: 5 * eps of their total size
    assert float(adaptive_contrastive_loss(s_p, s_n, adaptive=False)) == pytest.approx(
        (0.3 - 0.2 + 0.5) - (0.9 + 0.1), abs=sum_rtol(5) * 2.0)


def test_model_contrastive_loss_is_equation_33_over_the_six_modality_pairs():
    """Recomputed row by row from the encoded H^p, H^r, V^p, V^r of the helpful rows."""
    model = build(relevance_threshold=1.0).eval()
    batch = make_batch(missing_images="some")
    features = model.encode(batch)
    names = ("product_text", "review_text", "product_image", "review_image")
    rows = [i for i in range(12) if batch["label"][i] > 1.0]

    def pooled(name, i):
        mask = features[f"{name}_mask"][i]
        return features[name][i][mask].max(dim=0).values if mask.any() else None

    cos = torch.nn.functional.cosine_similarity
    expected = 0.0
    for a, b in itertools.combinations(names, 2):
        for j in rows:
            for k in rows:
                t1, t2 = pooled(a, j), pooled(b, k)
                if t1 is None or t2 is None:
                    continue
                sim = cos(t1, t2, dim=0).item()
                if j == k:
                    expected -= max(2.0 - sim, 0.0) * sim
                else:                          # any two distinct rows, same product or not
                    expected += max(sim - 0.0, 0.0) * sim
    # float32 pooled features and cosines (hidden 16) summed over up to 6 * 12 * 12 pairs,
    # each term at most 2 in size: the sum's bound plus the cosines' own (16 + 16 + 2)
    pairs = 6 * len(rows) ** 2
    assert_close_in_scale(model(batch).aux_loss.item(), expected, sum_rtol(pairs + 34),
                          2.0 * pairs)


def test_parameter_counts_next_to_the_papers(capsys):
    glove = {"product": torch.zeros(1000, 300), "review": torch.zeros(1000, 300)}
    amazon = inputs_for("ids", vectors=glove)
    amazon.image_dim = 2048
    model = MclModel({}, amazon)
    trainable = model.num_parameters()
    with_tables = model.num_parameters(exclude_embeddings=False)
    assert with_tables - trainable == 2 * 1000 * 300
    no_cross = MclModel({"cross_modal_interaction": False}, amazon).num_parameters()
    bert_inputs = inputs_for("features", text_dim=768)
    bert_inputs.image_dim = 2048
    bert = MclModel({}, bert_inputs).num_parameters()
    with capsys.disabled():
        print(f"\nMCL parameters without word vectors: {trainable / 1e6:.2f} M with 300-d vectors, "
              f"{bert / 1e6:.2f} M on 768-d features, {no_cross / 1e6:.2f} M without the "
              "cross-modal module (the MCL paper gives no count; MCR, the model it extends, "
              "has 2.63 M as reported in the SANCL paper)")


def test_text_only_runs_score_and_learn_without_image_keys():
    model = build(images=False)
    assert model.product_image_encoder is None and model.review_image_encoder is None
    batch = without_images(make_batch())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = total_loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_default_config_builds_the_model_with_the_dataclass_defaults():
    import dataclasses

    from mrhp_prep.train.models.mcl import MclOptions
    from mrhp_prep.train.settings.config import model_defaults

    from mrhp_prep.train.models.text_encoder import ENCODER_KEYS

    section = model_defaults("mcl")[0]["model"]
    assert section.pop("name") == "mcl"
    for key in ENCODER_KEYS:                 # the text encoder's settings, not the model's
        section.pop(key)
    assert section.pop("relevance_threshold") == "auto"
    defaults = {f.name: f.default for f in dataclasses.fields(MclOptions)}
    defaults.pop("relevance_threshold")
    assert section == defaults
    model = MclModel({**section, "relevance_threshold": 0}, inputs_for("ids"))
    assert model.options.hidden_dim == 128
    with pytest.raises(InputError, match="relevance_threshold must be a number"):
        MclModel({"relevance_threshold": "auto"}, inputs_for("ids"))


def test_fine_tuned_word_vectors_are_a_copy_of_a_read_only_store(tmp_path):
    """embed-text's vectors may come memory-mapped read-only; training must not write into them."""
    vectors = inputs_for("ids")
    np.save(tmp_path / "product.npy", vectors.product_vectors)
    np.save(tmp_path / "review.npy", vectors.review_vectors)
    vectors.product_vectors = np.load(tmp_path / "product.npy", mmap_mode="r")
    vectors.review_vectors = np.load(tmp_path / "review.npy", mmap_mode="r")
    torch.manual_seed(0)
    model = MclModel({**small_options(), **NO_DROPOUT}, vectors)
    assert model.product_tokens.embedding.weight.requires_grad
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    total_loss(model, make_batch()).backward()
    optimizer.step()
    assert not torch.equal(model.product_tokens.embedding.weight.detach(),
                           torch.from_numpy(np.array(vectors.product_vectors)))
    assert np.array_equal(np.load(tmp_path / "product.npy"), inputs_for("ids").product_vectors)
