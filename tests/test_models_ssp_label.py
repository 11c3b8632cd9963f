"""SSP-Label pseudo labels of MM-SS: the EWMA of eq. 11-12 with the observations of
eq. 17-21 (anchors, precisions, distances), checked against numpy written out by hand, and
the model's pseudo-label state through the epochs."""

from __future__ import annotations

import numpy as np
import torch

from mmss_support import ROWS, build, interaction_inputs_present
from mrhp_prep.train.models.mmss import SUBTASKS
from mrhp_prep.train.models.ssp_label import anchor_and_precision, ewma_beta, ssp_label
from synthetic_batches import make_batch, total_loss, without_images
from tolerances import EPS64, assert_close_in_scale, sum_rtol
from train_fixtures import one_torch_thread  # noqa: F401

# The model keeps float32 running sums over the batch's rows (ROWS of them, 8-d
# representations) and inverts the shrunk scatter; numpy recomputes them in float64.
# An anchor is a weighted mean of ROWS rows: ROWS * eps of the representations' size.
ANCHOR_RTOL = sum_rtol(ROWS + 1)


def precision_rtol(precision: np.ndarray) -> float:
    """A matrix inverse amplifies the relative error of the matrix (the scatter: sums of
    ROWS products, 8 wide) by up to its condition number (Higham, section 14.1)."""
    return float(np.linalg.cond(precision)) * sum_rtol(ROWS + 8, k=2)


def pseudo_rtol(precisions) -> float:
    """A pseudo label is a few ratios and sums of Mahalanobis distances (square roots of
    quadratic forms in the precisions): a small multiple (4: the ratio of two distances,
    each inheriting the precision's error, and the EWMA) of the precisions' bound."""
    return 4 * max(precision_rtol(p) for p in precisions) + sum_rtol(8)


def numpy_anchor_and_precision(reprs: np.ndarray, labels: np.ndarray, shrinkage: float):
    """Eq. 17-18 written out for one task: sigmoid-weighted anchor, shrunk scatter about it."""
    weights = 1 / (1 + np.exp(-labels))
    anchor = (weights[:, None] * reprs).sum(0) / weights.sum()
    centred = reprs - anchor
    scatter = centred.T @ centred / len(reprs)
    d = reprs.shape[1]
    shrunk = (1 - shrinkage) * scatter + shrinkage * np.trace(scatter) / d * np.eye(d)
    return anchor, np.linalg.inv(shrunk)


def numpy_distance(reprs, anchor, precision, scale):
    centred = reprs - anchor
    return np.sqrt(np.einsum("bi,ij,bj->b", centred, precision, centred) / scale)


def test_pseudo_labels_start_at_the_label_and_follow_the_ewma_of_equations_11_12():
    """y_s^(1) = y_g; from epoch 2 on, the review's first batch of epoch i computes
    y_s^(i) = beta y_hat_s^(i) + (1 - beta) y_s^(i-1), beta = 2 / (i + 1), with the observation
    from the previous epoch's anchors (eq. 17-21 written out in numpy here); with
    `same-epoch` timing that batch already trains on it."""
    model = build("features", pseudo_label_timing="same-epoch")
    batch = make_batch("features")                    # some rows lack product and review images
    label = batch["label"].numpy().astype(np.float64)
    index = batch["review_index"]
    valid = interaction_inputs_present(batch)
    assert not valid[:, 1].all() and valid[:, [0, 2, 3, 4]].all()   # p_v r_v is missing twice

    def representations():
        with torch.no_grad():
            parts = model.represent(batch)           # no dropout: same as the training pass
        assert np.array_equal(parts["subtask_valid"].numpy(), valid)
        return parts["global_repr"].double().numpy(), parts["subtask_repr"].double().numpy()

    def subtask_anchors(reprs, labels):
        return [numpy_anchor_and_precision(reprs[valid[:, j], j], labels[valid[:, j], j], 0.1)
                for j in range(5)]

    def observation(g, s, anchor_g, precision_g, anchors_s):
        chi_g = numpy_distance(g, anchor_g, precision_g, 8)
        chi_s = np.stack([numpy_distance(s[:, j], *anchors_s[j], 8) for j in range(5)], axis=1)
        return ((label[:, None] + (chi_s - chi_g[:, None])) / 2
                + chi_s * label[:, None] / (2 * (chi_g[:, None] + 1e-6)))

    label_per_task = np.repeat(label[:, None], 5, axis=1)
    # epoch 1: labels are y_g, every sample weight is 0: no subtask loss at all
    out = model(batch)
    state = model.state
    assert torch.equal(state.pseudo_label[index], batch["label"][:, None].expand(-1, 5))
    assert state.known[index].all() and not state.known[ROWS:].any()
    assert out.aux_loss is None
    assert all(v == 0.0 for k, v in out.logs.items() if k.startswith("subtask_loss_"))
    g1, s1 = representations()
    model.on_epoch_end(0)
    assert torch.equal(state.pseudo_label[index], batch["label"][:, None].expand(-1, 5))
    anchor_g, precision_g = numpy_anchor_and_precision(g1, label, 0.1)
    assert_close_in_scale(state.anchor[0], anchor_g, ANCHOR_RTOL, np.abs(g1).max(), "anchor")
    assert_close_in_scale(state.precision[0], precision_g, precision_rtol(precision_g),
                          what="precision")
    anchors_s = subtask_anchors(s1, label_per_task)
    assert_close_in_scale(state.anchor[2], anchors_s[1][0], ANCHOR_RTOL,    # valid rows only
                          np.abs(s1).max(), "anchor 2")

    # epoch 2: the first batch already trains on y_s^(2) (beta = 2 / 3, epoch 1's anchors)
    g2, s2 = representations()
    out = model(batch)
    y2 = np.where(valid, 2 / 3 * observation(g2, s2, anchor_g, precision_g, anchors_s)
                  + 1 / 3 * label[:, None], label[:, None])
    rtol = pseudo_rtol([precision_g, *(p for _, p in anchors_s)])
    assert_close_in_scale(state.pseudo_label[index], y2, rtol, what="y2")
    assert state.pseudo_label[index].sub(batch["label"][:, None]).abs().max() > 1e-3
    assert out.aux_loss is not None and max(out.logs[f"subtask_loss_{s}"] for s in SUBTASKS) > 0
    model(batch)                                     # seen again in the epoch: no second update
    assert_close_in_scale(state.pseudo_label[index], y2, rtol, what="y2 again")
    model.on_epoch_end(1)
    assert_close_in_scale(state.pseudo_label[index], y2, rtol, what="y2 after the epoch")

    # epoch 3: anchors from epoch 2's rows, weighted by sigmoid(y_s^(2)); beta = 2 / (3 + 1)
    anchors_s = subtask_anchors(s2, y2)
    anchor_g, precision_g = numpy_anchor_and_precision(g2, label, 0.1)
    for j, (anchor_s, _) in enumerate(anchors_s):
        assert_close_in_scale(state.anchor[j + 1], anchor_s, ANCHOR_RTOL, np.abs(s2).max(),
                              f"anchor {j + 1}")
    g3, s3 = representations()
    model(batch)
    y3 = np.where(valid, 0.5 * observation(g3, s3, anchor_g, precision_g, anchors_s) + 0.5 * y2, y2)
    rtol = pseudo_rtol([precision_g, *(p for _, p in anchors_s)])
    assert_close_in_scale(state.pseudo_label[index], y3, rtol, what="y3")
    # reviews never seen keep no label
    assert not state.known[ROWS:].any() and (state.pseudo_label[ROWS:] == 0).all()


def test_no_subtask_weight_moves_while_its_loss_is_identically_zero():
    """Epochs 1 and 2 (targets y_s = y_g, W = 0 everywhere: the default `next-epoch` timing
    trains epoch 2 on y_s^(1)): Adam with weight decay leaves every subtask parameter,
    log sigma^2 included, exactly as it was, while the rest of the model trains; epoch 3's
    first step moves them."""
    model = build()
    batch = make_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=0.1)
    subtask_names = [n for n, _ in model.named_parameters()
                     if n.startswith(("subtask_", "log_variance"))]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def step():
        loss = total_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    params = dict(model.named_parameters())
    for name in subtask_names:
        assert torch.equal(params[name], before[name]), name
    assert not torch.equal(params["global_scorer.weight"], before["global_scorer.weight"])
    model.on_epoch_end(0)
    for _ in range(3):
        step()                                        # epoch 2: labels move, targets do not
    assert (model.state.pseudo_label[batch["review_index"]] != batch["label"][:, None]).any()
    for name in subtask_names:
        assert torch.equal(params[name], before[name]), name
    model.on_epoch_end(1)
    step()                                            # epoch 3: targets y_s^(2) != y_g, W > 0
    for name in subtask_names:
        assert not torch.equal(params[name], before[name]), name


def test_a_task_without_inputs_in_the_batch_keeps_its_head_out_of_the_graph():
    model = build(images=False, pseudo_label_timing="same-epoch")
    batch = without_images(make_batch())
    model(batch)
    model.on_epoch_end(0)
    out = model(batch)                                # p_v r_v has no row with inputs
    out.aux_loss.backward()
    assert model.subtask_heads["pvrv"][0].weight.grad is None
    assert model.subtask_heads["ptrt"][0].weight.grad is not None
    assert model.log_variance["pvrv"].grad is None    # not even a zero: no Adam step at all
    assert model.log_variance["ptrt"].grad is not None


def test_a_constant_representation_gets_no_anchor_and_no_observations():
    """In a text-only run p_v r_v never has input; nothing may come out of its zero spread."""
    model = build(images=False)
    batch = without_images(make_batch())
    for epoch in range(3):
        model(batch)
        model.on_epoch_end(epoch)
    state = model.state
    assert state.anchor_ready.tolist() == [True, True, False, True, True, True]
    index = batch["review_index"]
    assert torch.equal(state.pseudo_label[index, 1], batch["label"])      # p_v r_v stays y_g
    assert (state.pseudo_label[index][:, [0, 2, 3, 4]] != batch["label"][:, None]).any()


def test_the_epoch_count_comes_from_the_model_state_not_the_caller():
    model = build()
    batch = make_batch()
    for _ in range(2):
        model(batch)
        model.on_epoch_end(7)
    assert int(model.state.epochs_done) == 2


def test_ewma_beta_is_two_over_i_plus_one():
    assert [ewma_beta(i) for i in (2, 3, 4, 9)] == [2 / 3, 2 / 4, 2 / 5, 2 / 10]


def test_ssp_label_is_the_mean_of_the_ratio_and_difference_forms():
    y_g = torch.tensor([0.0, 2.0, 4.0])
    chi_g = torch.tensor([1.0, 0.5, 2.0])
    chi_s = torch.tensor([[1.0], [1.5], [0.5]])
    got = ssp_label(y_g, chi_g, chi_s, correlation_ratio=0.8, correlation_difference=1.2,
                    epsilon=0.0)
    ratio_form = 0.8 * chi_s[:, 0] / chi_g * y_g                 # eq. 19
    difference_form = y_g + 1.2 * (chi_s[:, 0] - chi_g)          # eq. 20
    # the same few float32 operations in another order: a few roundings of values below 10
    assert_close_in_scale(got[:, 0], (ratio_form + difference_form) / 2, sum_rtol(6), 10.0)
    # equal distances leave the label where it is (alpha = 1)
    assert_close_in_scale(ssp_label(y_g, chi_g, chi_g[:, None], epsilon=0.0)[:, 0], y_g,
                          sum_rtol(6), 10.0)


def test_anchor_and_precision_from_running_sums_match_the_direct_computation():
    rng = np.random.default_rng(0)
    reprs, labels = rng.normal(size=(30, 4)), rng.integers(0, 5, 30).astype(float)
    weights = 1 / (1 + np.exp(-labels))
    t = lambda a: torch.tensor(a)[None]   # noqa: E731  one task
    anchor, precision, usable = anchor_and_precision(
        t(weights.sum()), t((weights[:, None] * reprs).sum(0)), t(30.0), t(reprs.sum(0)),
        t(reprs.T @ reprs), shrinkage=0.25)
    expected_anchor, expected_precision = numpy_anchor_and_precision(reprs, labels, 0.25)
    # float64 running sums of 30 rows against the direct float64 computation; the precision
    # is an inverse: times its condition number (Higham, section 14.1)
    assert_close_in_scale(anchor[0], expected_anchor, sum_rtol(31, eps=EPS64),
                          np.abs(reprs).max(), "anchor")
    assert_close_in_scale(precision[0], expected_precision,
                          np.linalg.cond(expected_precision) * sum_rtol(34, k=2, eps=EPS64),
                          what="precision")
    assert usable.tolist() == [True]
    constant = np.ones((30, 4))
    *_, usable = anchor_and_precision(
        t(weights.sum()), t((weights[:, None] * constant).sum(0)), t(30.0), t(constant.sum(0)),
        t(constant.T @ constant), shrinkage=0.25)
    assert usable.tolist() == [False]
