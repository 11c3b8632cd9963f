"""SANCL as the paper describes it and as the released model has it: each submodule counted by
hand from its layer sizes, the image path (MCR's encoder, cross-image attention over the
product's regions, average pooling), and what `architecture: released` adds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mrhp_prep.train.models import build_model
from mrhp_prep.train.models.base import ModelInputs
from mrhp_prep.train.models.sancl_layers import (PreNormLayer, ProductAwareAttention,
                                                 RoiImageEncoder)
from mrhp_prep.train.report.parameters import parameter_rows
from mrhp_prep.train.settings.config import resolve_config
from train_fixtures import one_torch_thread  # noqa: F401


# --------------------------------------------------------------------------- counts by hand


def linear(a: int, b: int) -> int:
    """nn.Linear(a, b): a weight a x b and a bias b."""
    return a * b + b


def layer_norm(d: int) -> int:
    return 2 * d                                     # gain and bias


def gru(inputs: int, hidden: int) -> int:
    """One uni-directional GRU layer: three gates, each W_ih, W_hh and two biases."""
    return 3 * (inputs * hidden + hidden * hidden + 2 * hidden)


def attention(d: int) -> int:
    return 4 * linear(d, d)                          # query, key, value, output maps


def pre_norm_layer(d: int, ffn: int) -> int:
    return layer_norm(d) + attention(d) + layer_norm(d) + linear(d, ffn) + linear(ffn, d)


def image_encoder(features: int = 2048, d: int = 128, layers: int = 3, ffn: int = 512) -> int:
    return linear(features, d) + layers * pre_norm_layer(d, ffn) + layer_norm(d)


def product_aware(d: int) -> int:
    return d * d + d                                 # W [d, d] and b [d]


def review_self_attention(d: int) -> int:
    return 2 * linear(d, d)                          # query and key maps, no value map


def projection(d: int, shared: int) -> int:
    return linear(d, shared) + linear(shared, shared)    # eq. 9: Linear, tanh, Linear


def predictor(shared: int) -> int:
    return 2 * linear(shared, shared)                # Linear, tanh, Linear


def expected_rows(text_dim: int, images: bool, probes: bool, architecture: str,
                  hidden: int = 128, image_hidden: int = 128, shared: int = 64) -> dict:
    """Trainable parameters per top-level submodule, from the layer sizes."""
    rows = {"product_gru": gru(text_dim, hidden), "review_gru": gru(text_dim, hidden)}
    if probes:
        rows["beta"] = linear(hidden, 1)              # eq. 6: W_gen, b_gen
    rows["review_attention"] = review_self_attention(hidden)
    rows["text_cross_attention"] = product_aware(hidden)
    modalities = 2 if images else 1
    if images:
        rows["image_encoder"] = image_encoder(d=image_hidden)
        rows["image_cross_attention"] = product_aware(image_hidden)
    rows["project"] = 2 * projection(hidden, shared) + (2 * projection(image_hidden, shared)
                                                        if images else 0)
    if architecture == "released":
        if images:
            rows["cpc_ii"] = 2 * predictor(shared)    # product and review text -> image
        rows["cpc_pr"] = modalities * predictor(shared)   # product -> review, per modality
        rows["output"] = linear(2 * 2 * modalities * shared, 128) + linear(128, 64) + linear(64, 1)
    else:
        rows["output"] = linear(2 * modalities * shared, 1)   # eq. 15 over the review's features
    return rows


def built(text_dim: int = 300, images: bool = True, probes: bool = True, **settings):
    overrides = [f"model.{key}={value}" for key, value in settings.items()]
    config = resolve_config("sancl", overrides=overrides, relevance_threshold=1.0)
    vectors = np.zeros((50, text_dim), np.float32)
    inputs = ModelInputs("static", text_dim, vectors, vectors, 2048 if images else None, probes)
    return build_model("sancl", config["model"], inputs)


def test_the_layer_formulas_give_the_released_parts_sizes():
    """The sizes the released code's parts have (reference §5b), from the formulas above."""
    assert pre_norm_layer(128, 512) == 198_272
    assert image_encoder() == 857_344
    assert product_aware(128) == 16_512
    assert review_self_attention(128) == 33_024
    assert gru(300, 128) == 165_120
    assert projection(128, 64) == 12_416
    assert predictor(64) * 2 == 16_640
    assert linear(8 * 64, 128) + linear(128, 64) + linear(64, 1) == 73_985


@pytest.mark.parametrize("text_dim,images,probes", [(300, True, True), (768, True, True),
                                                    (300, False, True), (300, True, False)])
@pytest.mark.parametrize("architecture", ["paper", "released"])
def test_every_submodule_has_the_size_its_layers_give(text_dim, images, probes, architecture):
    model = built(text_dim, images, probes, architecture=architecture)
    rows = {r.name: r.trainable for r in parameter_rows(model)}
    assert rows.pop("product_tokens") == 0 and rows.pop("review_tokens") == 0   # frozen tables
    assert rows == expected_rows(text_dim, images, probes, architecture)
    assert model.num_parameters() == sum(rows.values())


def test_glove_totals_are_the_papers_and_the_released_models():
    paper, released = built(architecture="paper"), built(architecture="released")
    assert paper.num_parameters() == 1_303_682           # eq. 10 cosine, eq. 15 linear
    assert released.num_parameters() == 1_410_690        # the paper's "1.41 M"
    assert released.num_parameters() - paper.num_parameters() == 107_008
    assert not hasattr(paper, "product_attention")       # no self-attention over product text


def test_one_image_encoder_per_field_on_request():
    shared, per_field = built(), built(image_encoders="per-field")
    assert per_field.num_parameters() - shared.num_parameters() == image_encoder()
    children = dict(per_field.named_children())
    assert {"product_image_encoder", "review_image_encoder"} <= children.keys()


# --------------------------------------------------------------------------- the image path


def test_cross_image_attention_ignores_padded_product_regions():
    """Garbage (huge values, inf, nan) in padded product rows changes no output."""
    torch.manual_seed(0)
    module = ProductAwareAttention(6)
    product, review = torch.randn(3, 5, 6), torch.randn(3, 4, 6)
    product_mask = torch.tensor([[True] * 3 + [False] * 2, [True] * 5, [False] * 5])
    review_mask = torch.tensor([[True] * 4, [True, True, False, False], [True] * 4])
    clean = module(product, product_mask, review, review_mask)
    for garbage in (1e6 * torch.randn(3, 5, 6), torch.full((3, 5, 6), math.inf),
                    torch.full((3, 5, 6), math.nan)):
        dirty = torch.where(product_mask[..., None], product, garbage)
        assert torch.equal(module(dirty, product_mask, review, review_mask), clean)
    assert torch.equal(clean[2], review[2])              # no product region: nothing gathered
    assert torch.all(clean[1, 2:] == 0)                  # padded review positions stay 0


def test_cross_image_attention_written_out():
    """r_i + sum_p softmax_p(relu(W x_p + b) . r_i) x_p over the real product regions."""
    torch.manual_seed(1)
    module = ProductAwareAttention(4)
    product, review = torch.randn(1, 3, 4), torch.randn(1, 2, 4)
    product_mask, review_mask = torch.tensor([[True, True, False]]), torch.ones(1, 2, dtype=bool)
    out = module(product, product_mask, review, review_mask)[0]
    w, b = module.transform.weight.detach(), module.transform.bias.detach()
    for i in range(2):
        keys = [torch.relu(w @ product[0, p] + b) for p in range(2)]
        scores = torch.tensor([float(k @ review[0, i]) for k in keys])
        weights = torch.softmax(scores, dim=0)
        expected = review[0, i] + weights[0] * product[0, 0] + weights[1] * product[0, 1]
        torch.testing.assert_close(out[i], expected)


def test_pre_norm_layer_written_out():
    """x + attention(LN(x)), then + W2 relu(W1 LN(.)): the pre-norm order, one head, eval."""
    torch.manual_seed(2)
    layer = PreNormLayer(4, heads=1, ffn_dim=6, dropout=0.5, attention_dropout=0.3,
                         relu_dropout=0.3).eval()
    x, mask = torch.randn(1, 3, 4), torch.tensor([[True, True, False]])
    out = layer(x, mask)[0]
    ln = torch.nn.functional.layer_norm
    a = layer.attention
    normed = ln(x[0], (4,), layer.attention_norm.weight, layer.attention_norm.bias)
    q, k, v = a.query(normed), a.key(normed), a.value(normed)
    weights = torch.softmax((q @ k[:2].T) / 2.0, dim=-1)             # sqrt(4) = 2, real keys
    after_attention = x[0] + a.output(weights @ v[:2])
    hidden = torch.relu(layer.hidden(ln(after_attention, (4,), layer.feed_forward_norm.weight,
                                        layer.feed_forward_norm.bias)))
    torch.testing.assert_close(out[:2], (after_attention + layer.out(hidden))[:2])


def test_image_encoder_masks_padded_regions_and_ends_in_a_layer_norm():
    torch.manual_seed(3)
    encoder = RoiImageEncoder(10, 8, layers=2, heads=2, ffn_dim=16, dropout=0.5,
                              attention_dropout=0.3, relu_dropout=0.3).eval()
    features, mask = torch.randn(2, 4, 10), torch.tensor([[True] * 3 + [False], [False] * 4])
    clean = encoder(features, mask)
    dirty = encoder(torch.where(mask[..., None], features, 1e4 * torch.randn(2, 4, 10)), mask)
    torch.testing.assert_close(clean, dirty)
    assert torch.all(clean[0, 3] == 0) and torch.all(clean[1] == 0)
    # each real region is the output of the final LayerNorm (gain 1, bias 0 at init)
    torch.testing.assert_close(clean[0, :3].mean(-1), torch.zeros(3), atol=1e-5, rtol=0)


def test_review_images_pool_after_attending_over_the_product_regions():
    model = built(text_dim=8, image_hidden=8, image_heads=2, image_ffn_dim=16).eval()
    torch.manual_seed(4)
    batch = {"product_image": torch.randn(2, 5, 2048), "review_image": torch.randn(2, 4, 2048),
             "product_image_mask": torch.tensor([[True] * 5, [True, True] + [False] * 3]),
             "review_image_mask": torch.tensor([[True, True, False, False], [False] * 4])}
    with torch.no_grad():
        pooled = model.pooled_images(batch)
        product = model.image_encoder(batch["product_image"], batch["product_image_mask"])
        review = model.image_encoder(batch["review_image"], batch["review_image_mask"])
        attended = model.image_cross_attention(product, batch["product_image_mask"], review,
                                               batch["review_image_mask"])
    torch.testing.assert_close(pooled["v_p"][1], product[1, :2].mean(0))
    torch.testing.assert_close(pooled["v_r"][0], attended[0, :2].mean(0))
    assert torch.all(pooled["v_r"][1] == 0) and pooled["has_r"].tolist() == [True, False]


# --------------------------------------------------------------------------- released


def _contrast_batch(rows: int = 8, text_dim: int = 8):
    torch.manual_seed(5)
    lengths = torch.tensor([5, 3, 6, 4, 5, 2, 6, 3])[:rows]
    text_mask = torch.arange(6)[None] < lengths[:, None]
    image_mask = torch.arange(4)[None] < torch.tensor([3, 2, 4, 1, 0, 2, 3, 4])[:rows, None]
    return {"product_text": torch.randint(2, 50, (rows, 6)) * text_mask,
            "product_text_mask": text_mask,
            "review_text": torch.randint(2, 50, (rows, 6)) * text_mask,
            "review_text_mask": text_mask,
            "product_image": torch.randn(rows, 4, 2048),
            "product_image_mask": torch.arange(4)[None] < torch.tensor([3, 2, 4, 1, 3, 2, 3, 4])[
                :rows, None],
            "review_image": torch.randn(rows, 4, 2048), "review_image_mask": image_mask,
            "review_probe": text_mask.float(),
            "label": torch.tensor([4.0, 0, 3, 1, 2, 0, 4, 1])[:rows],
            "product_index": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])[:rows]}


def test_released_predictors_sit_in_front_of_one_side_of_each_contrastive_score():
    model = built(text_dim=8, architecture="released", embedding_dropout=0.0, image_dropout=0.0,
                  image_attention_dropout=0.0, image_relu_dropout=0.0)   # training mode
    batch = _contrast_batch()
    before = model(batch).logs
    with torch.no_grad():                # a predictor that outputs a constant flattens its term
        model.cpc_pr["text"].net[2].weight.zero_()
        model.cpc_pr["text"].net[2].bias.fill_(1.0)
    after = model(batch).logs
    assert after["cpc_pr_t"] != pytest.approx(before["cpc_pr_t"])
    assert after["cpc_ii"] == pytest.approx(before["cpc_ii"])
    assert after["cpc_pr_v"] == pytest.approx(before["cpc_pr_v"])
    assert model.output[0].in_features == 8 * 64         # review and product, 2 domains x 2


def test_released_scorer_reads_the_product_projections():
    """With the MLP over review and product features, a product's image moves the score of
    a review without images; in the paper's model only the review's features are scored."""
    batch = _contrast_batch()
    no_review_image = ~batch["review_image_mask"].any(1)
    assert no_review_image.any()
    changed = dict(batch)
    changed["product_image"] = batch["product_image"] + 1.0
    for architecture, moves in (("released", True), ("paper", False)):
        model = built(text_dim=8, architecture=architecture).eval()
        with torch.no_grad():
            delta = (model(changed).score - model(batch).score)[no_review_image].abs().max()
        assert bool(delta > 1e-6) is moves, architecture


def test_unresolved_relevance_threshold_is_the_datasets_or_a_clear_refusal():
    """A model built from the declared defaults (`relevance_threshold: auto`, as no run's
    config.yaml holds it) takes the dataset's threshold from its inputs; inputs from no
    manifest leave `auto` meaning nothing: an InputError naming the key, never float('auto')."""
    import dataclasses

    from mrhp_prep.errors import InputError
    from mrhp_prep.train.settings.config import model_defaults

    for name in ("sancl", "mcl"):
        section = model_defaults(name)[0]["model"]
        assert section["relevance_threshold"] == "auto"
        vectors = np.zeros((50, 16), np.float32)
        inputs = ModelInputs("static", 16, vectors, vectors, 2048, True)
        lazada = dataclasses.replace(inputs, relevance_threshold=0)
        assert build_model(name, section, lazada).relevance_threshold == 0.0
        with pytest.raises(InputError, match="model.relevance_threshold"):
            build_model(name, section, inputs)
