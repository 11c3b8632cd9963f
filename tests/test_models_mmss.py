"""MM-SS: shapes, missing images, eq. 14-15 loss weighting, ablations, checkpoints, the
pseudo-label state across processes. The SSP-Label maths: test_models_ssp_label.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmss_support import ROWS, build, interaction_inputs_present, options
from mrhp_prep.errors import InputError
from mrhp_prep.train.models.mmss import SUBTASKS, MmssModel
from mrhp_prep.train.models.ssp_label import sample_weights, uncertainty_weighted_loss
from synthetic_batches import inputs_for, make_batch, total_loss, without_images
from tolerances import assert_close_in_scale, sum_rtol
from train_fixtures import one_torch_thread  # noqa: F401


@pytest.mark.parametrize("text", ["ids", "features"])
def test_forward_shapes_in_training_and_eval(text):
    model = build(text)
    batch = make_batch(text)
    out = model(batch)
    assert out.score.shape == (ROWS,) and out.aux_loss is None     # epoch 1: y_s = y_g, W = 0
    model.on_epoch_end(0)
    assert model(batch).aux_loss is None          # epoch 2 trains on y_s^(1) = y_g (next-epoch)
    model.on_epoch_end(1)
    assert model(batch).aux_loss.shape == ()
    parts = model.represent(batch)
    assert parts["global_repr"].shape == (ROWS, 8)
    assert parts["subtask_repr"].shape == (ROWS, 5, 8)
    assert parts["subtask_score"].shape == (ROWS, 5)
    model.eval()
    evaluated = model(make_batch(text, review_index_offset=1000))   # another split's indices
    assert evaluated.aux_loss is None and evaluated.score.shape == (ROWS,)


@pytest.mark.parametrize("text,missing",
                         [("ids", "all"), ("features", "all"), ("features", "some")])
def test_items_without_images_give_finite_scores_losses_and_gradients(text, missing):
    model = build(text)
    batch = make_batch(text, missing_images=missing)
    for epoch in range(4):                 # run into epochs with anchors and observations
        loss = total_loss(model, batch)
        loss.backward()
        model.on_epoch_end(epoch)
    assert torch.isfinite(loss)
    assert torch.isfinite(model.state.pseudo_label).all()
    for name, parameter in model.named_parameters():
        if parameter.grad is not None:
            assert torch.isfinite(parameter.grad).all(), name


# --------------------------------------------------------------------------- eq. 14-15


def test_sample_weights_are_tanh_of_the_label_offset():
    pseudo = torch.tensor([[1.0, 3.5], [0.0, -1.0]])
    label = torch.tensor([1.0, 0.5])
    # float32 tanh of exact differences against float64 tanh rounded: a few ulps of values
    # below 1
    assert_close_in_scale(sample_weights(pseudo, label),
                          [[0.0, np.tanh(2.5)], [np.tanh(0.5), np.tanh(1.5)]], sum_rtol(4), 1.0)


def test_uncertainty_weighting_is_equation_15():
    losses = torch.tensor([0.3, 1.2, 0.0, 2.0, 0.7])
    sigma = torch.tensor([0.5, 1.0, 2.0, 1.5, 0.8])
    expected = (losses / (2 * sigma ** 2)).sum() + torch.log(sigma.prod())
    # five terms each way (sums, exp / log of the variances): 2 * 5 roundings of their size
    scale = float((losses / (2 * sigma ** 2)).sum() + torch.log(sigma).abs().sum())
    assert_close_in_scale(uncertainty_weighted_loss(losses, torch.log(sigma ** 2)), expected,
                          sum_rtol(10, k=2), scale)


def test_model_aux_loss_is_the_weighted_l1_of_equation_14_under_equation_15():
    # the registry passes the model's name along; same-epoch: epoch 2 trains on y_s^(2)
    model = build(name="mmss", pseudo_label_timing="same-epoch")
    batch = make_batch()
    index = batch["review_index"]
    model(batch)
    model.on_epoch_end(0)
    with torch.no_grad():
        for name, value in zip(model.subtasks, [0.2, -0.3, 0.0, 0.5, -0.1]):
            model.log_variance[name].fill_(value)
    out = model(batch)                                # epoch 2: pseudo labels now differ from y_g
    pseudo = model.state.pseudo_label[index].clone()
    subtask_score = model.represent(batch)["subtask_score"].detach()
    label = batch["label"]
    valid = torch.from_numpy(interaction_inputs_present(batch))
    sigma = torch.exp(model.log_variances().detach() / 2)
    expected, magnitude = 0.0, 0.0
    for j in range(5):               # each task averages over the rows that have its inputs
        rows = valid[:, j]
        weights = torch.tanh((pseudo[rows, j] - label[rows]).abs())
        task_loss = (weights * (subtask_score[rows, j] - pseudo[rows, j]).abs()).mean()
        expected += task_loss / (2 * sigma[j] ** 2) + torch.log(sigma[j])
        magnitude += float(task_loss / (2 * sigma[j] ** 2) + torch.log(sigma[j]).abs())
    # float32 means over ROWS rows per task, five tasks: the sums' bound (ROWS + 5) with the
    # weights' own roundings (tanh, the weighting): k = 2, of the terms' total size
    assert_close_in_scale(out.aux_loss.item(), float(expected), sum_rtol(ROWS + 5, k=2),
                          magnitude)


# --------------------------------------------------------------------------- training


ABLATIONS = {"full": {}, "no_module_d": {"subtasks": []},
             "no_module_b": {"interaction_modeling": False, "subtasks": []}}
ABLATIONS.update({f"no_{s}": {"subtasks": [t for t in SUBTASKS if t != s]} for s in SUBTASKS})


@pytest.mark.parametrize("text,ablation",
                         [("ids", name) for name in ABLATIONS] + [("features", "full")])
def test_a_few_adam_steps_lower_the_total_loss(text, ablation):
    """The loss falls while its targets stay fixed: within the third epoch when there are
    subtasks (their pseudo labels move at each epoch's first batch from epoch 2 on), over the
    whole run when the model only ranks."""
    model = build(text, **ABLATIONS[ablation])
    batch = make_batch(text)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    epochs = []
    for epoch in range(3):
        losses = []
        for _ in range(6 if epoch < 2 else 12):
            loss = total_loss(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        epochs.append(losses)
        if epoch < 2:
            model.on_epoch_end(epoch)
    assert np.isfinite(sum(epochs, [])).all()
    if model.subtasks:
        last = epochs[-1]
        assert last[-1] < last[0] - 0.05, last
        assert model.log_variances().shape == (len(model.subtasks),)
        assert model.state.pseudo_label.shape == (20, len(model.subtasks))
    else:
        assert epochs[-1][-1] < epochs[0][0] - 0.1, epochs


def test_ablations_remove_what_they_name():
    full = build()
    assert set(full.subtask_heads) == set(SUBTASKS)
    without = build(subtasks=[s for s in SUBTASKS if s != "pvrv"])
    assert "pvrv" not in without.subtask_heads and "pvrv" in without.interactions
    no_d = build(subtasks=[])
    assert no_d.state is None and no_d(make_batch()).aux_loss is None
    assert "state.pseudo_label" not in no_d.state_dict()
    no_b = build(interaction_modeling=False, subtasks=[])
    assert no_b.interactions is None and no_b.num_parameters() < no_d.num_parameters()


@pytest.mark.parametrize("bad,message", [
    ({"subtasks": ["ptrt", "pxrx"]}, "'model.subtasks' must be a list of distinct names"),
    ({"interaction_modeling": False}, "set subtasks: \\[\\] as well"),
    ({"beta": 0.5}, "unknown MmssOptions option"),
])
def test_bad_options_are_refused_with_the_fix(bad, message):
    with pytest.raises(InputError, match=message):
        build(**bad)


def test_review_index_outside_a_fixed_state_is_refused():
    model = build(num_train_reviews=5)
    with pytest.raises(InputError, match="num_train_reviews=5"):
        model(make_batch())


def test_state_sized_from_the_data_grows_and_loads_into_a_fresh_model(tmp_path):
    model = build(num_train_reviews=None)
    assert model.state.capacity == 0
    model(make_batch())                                   # review rows 0..11
    model(make_batch(seed=1, review_index_offset=30))     # rows 30..41
    assert model.state.capacity >= 42
    assert model.state.known.sum() == 24 and model.state.known[30:42].all()
    model.on_epoch_end(0)
    path = tmp_path / "grown.pt"
    torch.save(model.state_dict(), path)
    fresh = build(num_train_reviews=None)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(fresh.state.pseudo_label, model.state.pseudo_label)
    assert torch.equal(fresh.state.known, model.state.known)


def test_checkpoint_round_trip_reproduces_scores_and_pseudo_label_state(tmp_path):
    model = build("features")
    batch = make_batch("features")
    for epoch in range(2):
        total_loss(model, batch).backward()
        model.on_epoch_end(epoch)
    model(batch)                                      # mid-epoch: epoch 3's labels updated
    path = tmp_path / "mmss.pt"
    torch.save(model.state_dict(), path)
    restored = MmssModel(options(), inputs_for("features"))
    restored.load_state_dict(torch.load(path, weights_only=True))
    model.eval(), restored.eval()
    assert torch.equal(model(batch).score, restored(batch).score)
    model.train(), restored.train()
    model.on_epoch_end(2)
    restored.on_epoch_end(2)
    for name, value in model.state.state_dict().items():
        assert torch.equal(value, restored.state.state_dict()[name]), name


def test_single_process_group_all_reduce_keeps_the_state(tmp_path):
    """The torchrun path (all-reduce at epoch end) on a one-process gloo group changes nothing."""
    import torch.distributed as dist

    batch = make_batch()
    plain, reduced = build(), build()
    for model in (plain, reduced):
        model(batch)
    plain.on_epoch_end(0)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}",
                            rank=0, world_size=1)
    try:
        reduced.on_epoch_end(0)
    finally:
        dist.destroy_process_group()
    for name, value in plain.state.state_dict().items():
        # an all-reduce over one process adds nothing: the same numbers
        assert torch.equal(value, reduced.state.state_dict()[name]), name


def test_parameter_counts(capsys):
    bert_inputs = inputs_for("features", text_dim=768)
    bert_inputs.image_dim = 2048
    bert = MmssModel({"num_train_reviews": 10}, bert_inputs)
    no_d = MmssModel({"subtasks": []}, bert_inputs)
    with capsys.disabled():
        print(f"\nMM-SS parameters on 768-d text features: {bert.num_parameters() / 1e6:.2f} M, "
              f"{no_d.num_parameters() / 1e6:.2f} M without the subtasks (module d); the MM-SS "
              "paper gives no count")
    heads = sum(p.numel() for name, p in bert.named_parameters()
                if name.startswith(("subtask_", "log_variance")))
    assert bert.num_parameters() - no_d.num_parameters() == heads


def test_text_only_runs_keep_the_text_subtask_learning():
    model = build(images=False)
    batch = without_images(make_batch())
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for epoch in range(3):
        losses = []
        for _ in range(6):
            loss = total_loss(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.on_epoch_end(epoch)
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert torch.isfinite(model.state.pseudo_label).all()


def test_default_config_builds_the_model_with_the_dataclass_defaults():
    import dataclasses

    from mrhp_prep.train.models.mmss import MmssOptions
    from mrhp_prep.train.settings.config import model_defaults

    from mrhp_prep.train.models.text_encoder import ENCODER_KEYS

    section = model_defaults("mmss")[0]["model"]
    assert section.pop("name") == "mmss"
    for key in ENCODER_KEYS:                 # the text encoder's settings, not the model's
        section.pop(key)
    defaults = {f.name: (f.default_factory() if f.default is dataclasses.MISSING else f.default)
                for f in dataclasses.fields(MmssOptions)}
    assert section == defaults
    model = MmssModel(section, inputs_for("features"))
    assert model.subtasks == list(SUBTASKS) and model.state.capacity == 0


def rank_batches(rank: int) -> list[dict]:
    """Two batches per rank per epoch: DDP syncs buffers before every forward, so a second
    forward is where another rank's sums would be lost."""
    return [make_batch(seed=2 * rank + k, review_index_offset=(2 * rank + k) * ROWS)
            for k in range(2)]


def _two_rank_worker(rank: int, rendezvous: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        model = build(num_train_reviews=None)            # sized from the data: ranks differ
        wrapped = DistributedDataParallel(model)          # default: broadcast_buffers=True
        for epoch in range(2):
            for batch in rank_batches(rank):
                wrapped(batch)
            model.on_epoch_end(epoch)
        torch.save(model.state.state_dict(), f"{out_dir}/rank{rank}.pt")
        # Both ranks done before either tears gloo down (as the trainer does): a rank that
        # destroys the group while the other still talks to it can abort the other.
        del wrapped
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_share_one_pseudo_label_state(tmp_path):
    """Each rank sees half of the rows; after the epoch ends both hold what one process that
    saw all rows would hold."""
    import torch.multiprocessing as mp

    mp.spawn(_two_rank_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2)
    single = build(num_train_reviews=None)
    for epoch in range(2):
        for batch in rank_batches(0) + rank_batches(1):
            single(batch)
        single.on_epoch_end(epoch)
    expected = single.state.state_dict()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        rows = 4 * ROWS                          # capacities may differ (they grow by doubling)
        assert not got["known"][rows:].any()
        for name, value in expected.items():
            if value.dim() and value.shape[0] == expected["known"].shape[0]:
                value, got[name] = value[:rows], got[name][:rows]
            # two ranks' float32 partial sums all-reduced against one process's sum over the
            # same 4 * ROWS rows: another order, 4 * ROWS * eps of the values' size
            assert_close_in_scale(got[name], value, sum_rtol(4 * ROWS + 2), what=name)


def test_an_inactive_subtasks_log_variance_stays_bit_identical_through_adam_steps():
    """With momentum from earlier active steps, Adam would move one shared log sigma^2 tensor
    in every entry (about lr a step); each task's own parameter takes no step at all while its
    loss is identically zero (here p_v r_v: a batch without images)."""
    model = build(pseudo_label_timing="same-epoch")
    with_images, without = make_batch(), make_batch(missing_images="all")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=0.01)

    def step(batch):
        loss = total_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model(with_images)
    model.on_epoch_end(0)
    for _ in range(3):                                 # epoch 2: every task active
        step(with_images)
    assert all(float(optimizer.state[model.log_variance[s]]["exp_avg"]) != 0
               for s in model.subtasks)
    frozen = model.log_variance["pvrv"].detach().clone()
    moving = model.log_variance["ptrt"].detach().clone()
    for _ in range(5):                                 # p_v r_v has no row with inputs
        step(without)
        assert torch.equal(model.log_variance["pvrv"].detach(), frozen)
    assert not torch.equal(model.log_variance["ptrt"].detach(), moving)


def test_checkpoints_of_one_log_variance_tensor_still_load(tmp_path):
    """An earlier version kept log sigma^2 as one [S] tensor and had no previous_label."""
    model = build("features")
    batch = make_batch("features")
    model(batch)
    model.on_epoch_end(0)
    state = model.state_dict()
    old = {k: v for k, v in state.items()
           if not k.startswith("log_variance.") and k != "state.previous_label"}
    old["log_variance"] = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    restored = build("features")
    restored.load_state_dict(old)
    assert restored.log_variances().tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert torch.equal(restored.state.previous_label, restored.state.pseudo_label)
