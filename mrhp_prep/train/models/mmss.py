"""MM-SS: multimodal interaction modelling with self-supervised multi-task learning.

The model of "Multimodal Interaction Modeling via Self-Supervised Multi-Task Learning for Review
Helpfulness Prediction" (Gong, Jia, Jing); sections and equations below refer to it.

1. Features (4.1): text features (frozen BERT-style features from embed-text, or static word
   vectors) projected to d; RoI features projected to d and self-attended, per item (as MCR).
2. Interactions (4.2, eq. 3-5): five SoftPool(SelfAttn([X; Y])) vectors [B, d] for the pairs
   p_t r_t, p_v r_v, p_t r_v, p_v r_t, r_t r_v (t = text, v = vision, p = product, r = review).
3. Global head (4.3, eq. 6-8): F_c = concat of the five [B, 5d] -> f_g* = GELU(Linear) [B, d_g]
   -> y_hat_g = Linear -> the score.
4. Subtasks (4.4, eq. 9): per interaction s, f_s* = GELU(Linear(f_s)) [B, d_s], y_hat_s = MLP.
   Their targets are pseudo labels y_s (SSP-Label, eq. 10-12, appendix eq. 17-21), kept per
   training review in buffers indexed by the batch's `review_index`:
   - y_s starts as y_g (the review's label) the first time the review is seen (eq. 12, i = 1);
   - during epoch i the model computes, per row, an observation of y_s from the distances of
     f_g* and f_s* to their anchors (eq. 17-21, below); at the end of epoch i (`on_epoch_end`)
     y_s <- beta * mean observation + (1 - beta) * y_s with beta = 2 / (i + 1), for every review
     observed in the epoch. Epoch 1 has no anchors yet, so y_s stays y_g after it (eq. 12).
   - the subtask loss (eq. 14) per task is mean_rows W * |y_hat_s - y_s| with the sample
     weight W = tanh(|y_s - y_g|), and the five are combined with homoscedastic uncertainty
     (eq. 15): sum_s L_s / (2 sigma_s^2) + log(sigma_1 ... sigma_5), learning
     eta_s = log sigma_s^2. This is the model's `aux_loss`; the trainer adds the pairwise
     ranking loss (eq. 13, 16).

SSP-Label as implemented (the paper leaves these open; each is an option):
- anchor A_k (eq. 17): mean of task k's representation over the training rows of the previous
  epoch, each weighted by sigmoid(its label), the label being y_g for the global task and the
  current pseudo label y_s for subtask s;
- Sigma (eq. 18): the second moment of the representation about its anchor over the same rows,
  shrunk toward a scaled identity, (1 - rho) Sigma + rho tr(Sigma)/d I with
  rho = `covariance_shrinkage` (the raw matrix is singular when a split has fewer rows than d);
- s_k (eq. 18): `distance_scale`; None = the representation's dimension d, which makes the
  expected chi_k^2 about 1 in every task so that chi_s / chi_g compares like with like;
- the observation (eq. 21, first line, which is the average of eq. 19 and eq. 20):
  y_s = (y_g + alpha_2 (chi_s - chi_g)) / 2 + alpha_1 chi_s y_g / (2 (chi_g + epsilon)),
  alpha_1 = `correlation_ratio`, alpha_2 = `correlation_difference` (both 1: equal distances
  give y_s = y_g); the eq. 21 second line does not follow from its first and is not used;
- the anchors are those of the previous epoch (an epoch's statistics are complete only at its
  end), so observations start in epoch 2 and the first EWMA update is the paper's i = 2;
- a row with nothing on either side of an interaction (p_v r_v of a product and a review
  without images, and so of every row of a text-only run) has no f_s to speak of: it takes no
  part in that subtask's loss, anchor or observations, and keeps its pseudo label. A task whose
  representation does not vary at all gets no anchor (its distances would be meaningless).

Multi-process training (torchrun): each rank accumulates its own rows during an epoch (the
state's buffers are on DistributedDataParallel's ignore list, so they are not overwritten by
rank 0's at each forward) and `on_epoch_end` sums the statistics and observations of all ranks
before updating, so every rank ends the epoch with the same labels and anchors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from ...errors import InputError
from .base import Batch, ModelOutput, RankingModel
from .layers import TokenInput, require_text
from .layers_mcl_mmss import (PairSelfAttention, encode_images, masked_mean, masked_soft_pool,
                              options_from_config, roi_encoder)

SUBTASKS = ("ptrt", "pvrv", "ptrv", "pvrt", "rtrv")


@dataclass
class MmssOptions:
    """MM-SS hyperparameters; defaults are the paper's (appendix A.2) where it gives them."""

    hidden_dim: int = 128                  # d_t = d_v: projected text and RoI features
    task_dim: int = 128                    # d_g = d_s: f_g*, f_s*
    subtask_mlp_hidden: int = 64           # hidden width of each subtask's MLP (eq. 9)
    freeze_embeddings: bool = False
    embedding_dropout: float = 0.1
    image_layers: int = 3
    image_heads: int = 4
    image_ffn_dim: int = 512
    image_dropout: float = 0.5
    image_attention_dropout: float = 0.3
    interaction_layers: int = 1            # layers of each SelfAttn([X; Y])
    interaction_heads: int = 4
    interaction_ffn_dim: int = 512
    dropout: float = 0.1
    interaction_modeling: bool = True      # False: ablation "w/o module (b)" (needs subtasks: [])
    subtasks: list[str] = field(default_factory=lambda: list(SUBTASKS))  # []: "w/o module (d)"
    num_train_reviews: int | None = None   # reviews of the training split; None: sized from the data
    correlation_ratio: float = 1.0         # alpha_1 of eq. 19
    correlation_difference: float = 1.0    # alpha_2 of eq. 20
    distance_scale: float | None = None    # s_k of eq. 18; None = the representation's dimension
    covariance_shrinkage: float = 0.1      # rho
    epsilon: float = 1e-6                  # epsilon of eq. 19 and 21


# --------------------------------------------------------------------------- SSP-Label maths


def ewma_beta(epoch: int) -> float:
    """beta of eq. 12 for epoch i >= 2: 2 / (i + 1)."""
    return 2.0 / (epoch + 1)


def sample_weights(pseudo_label: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """W = tanh(|y_s - y_g|): pseudo_label [B, S], label [B] -> [B, S]."""
    return torch.tanh((pseudo_label - label[:, None]).abs())


def uncertainty_weighted_loss(task_losses: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """Eq. 15: sum_s L_s / (2 sigma_s^2) + log prod_s sigma_s, with log_variance = log sigma^2.

    task_losses [S], log_variance [S] -> scalar.
    """
    return (0.5 * torch.exp(-log_variance) * task_losses + 0.5 * log_variance).sum()


def mahalanobis_distance(representation: torch.Tensor, anchor: torch.Tensor,
                         precision: torch.Tensor, scale: float) -> torch.Tensor:
    """Eq. 18: sqrt((f - A)^T Sigma^-1 (f - A)) / sqrt(s). representation [B, d] -> [B]."""
    offset = representation - anchor
    squared = ((offset @ precision) * offset).sum(dim=-1).clamp_min(0.0)
    return torch.sqrt(squared / scale)


def ssp_label(label: torch.Tensor, global_distance: torch.Tensor, subtask_distance: torch.Tensor,
              correlation_ratio: float = 1.0, correlation_difference: float = 1.0,
              epsilon: float = 1e-6) -> torch.Tensor:
    """Eq. 21 (first line): the pseudo-label observation y_g + delta_gs.

    label [B] (y_g), global_distance [B] (chi_g), subtask_distance [B, S] (chi_s) -> [B, S].
    """
    y_g = label[:, None]
    chi_g = global_distance[:, None]
    return ((y_g + correlation_difference * (subtask_distance - chi_g)) / 2
            + correlation_ratio * subtask_distance * y_g / (2 * (chi_g + epsilon)))


MIN_VARIANCE = 1e-10   # a representation spread less than this has no usable distance


def anchor_and_precision(weight_total: torch.Tensor, weighted_sum: torch.Tensor,
                         count: torch.Tensor, total: torch.Tensor, outer: torch.Tensor,
                         shrinkage: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Anchors (eq. 17) and shrunk inverse second moments (eq. 18) from running sums.

    Per task k (leading dimension T): weight_total [T] = sum w, weighted_sum [T, d] = sum w f,
    count [T] = n, total [T, d] = sum f, outer [T, d, d] = sum f f^T.
    Returns anchor [T, d], precision [T, d, d] (float64) and usable [T] bool: False for a task
    without rows or whose representation does not vary (a constant vector has no scale to
    measure distances in; its inverse would be astronomically large).
    """
    rows = count.clamp_min(1.0)
    anchor = weighted_sum / weight_total.clamp_min(1e-12)[:, None]
    mean = total / rows[:, None]
    second = outer / rows[:, None, None]
    # E[(f - A)(f - A)^T] = E[f f^T] - E[f] A^T - A E[f]^T + A A^T
    scatter = (second - mean[:, :, None] * anchor[:, None, :] - anchor[:, :, None] * mean[:, None, :]
               + anchor[:, :, None] * anchor[:, None, :])
    scatter = (scatter + scatter.transpose(1, 2)) / 2
    dim = scatter.shape[-1]
    level = scatter.diagonal(dim1=1, dim2=2).sum(-1) / dim
    usable = (count > 0) & (level > MIN_VARIANCE)
    identity = torch.eye(dim, dtype=scatter.dtype, device=scatter.device)
    shrunk = ((1 - shrinkage) * scatter
              + shrinkage * level.clamp_min(MIN_VARIANCE)[:, None, None] * identity)
    return anchor, torch.linalg.pinv(shrunk, hermitian=True), usable


# --------------------------------------------------------------------------- the model


PER_REVIEW = ("pseudo_label", "known", "observation_sum", "observation_count")
EPOCH_SUMS = ("observation_sum", "observation_count", "weight_total", "weighted_sum", "count",
              "total", "outer")


class PseudoLabelState(nn.Module):
    """Per-review pseudo labels and the running statistics of SSP-Label (all buffers).

    Per review (row N = review_index): pseudo_label [N, S], known [N] (seen at least once),
    observation_sum and observation_count [N, S] (this epoch). Per task (T = 1 + S, the global
    task first): anchor [T, d], precision [T, d, d], anchor_ready [T], and this epoch's running
    sums for the next anchors. With `capacity` None the per-review buffers grow (doubling) to the largest
    review_index seen, and a checkpoint's size is taken over on load; with a number they are
    allocated once and a larger index is an error.
    """

    def __init__(self, capacity: int | None, num_subtasks: int, dim: int):
        super().__init__()
        self.fixed = capacity is not None
        rows, tasks = capacity or 0, 1 + num_subtasks
        self.register_buffer("pseudo_label", torch.zeros(rows, num_subtasks))
        self.register_buffer("known", torch.zeros(rows, dtype=torch.bool))
        self.register_buffer("observation_sum", torch.zeros(rows, num_subtasks, dtype=torch.float64))
        self.register_buffer("observation_count", torch.zeros(rows, num_subtasks,
                                                              dtype=torch.float64))
        self.register_buffer("epochs_done", torch.zeros((), dtype=torch.long))
        self.register_buffer("anchor", torch.zeros(tasks, dim))
        self.register_buffer("precision", torch.zeros(tasks, dim, dim))
        self.register_buffer("anchor_ready", torch.zeros(tasks, dtype=torch.bool))
        self.register_buffer("weight_total", torch.zeros(tasks, dtype=torch.float64))
        self.register_buffer("weighted_sum", torch.zeros(tasks, dim, dtype=torch.float64))
        self.register_buffer("count", torch.zeros(tasks, dtype=torch.float64))
        self.register_buffer("total", torch.zeros(tasks, dim, dtype=torch.float64))
        self.register_buffer("outer", torch.zeros(tasks, dim, dim, dtype=torch.float64))

    @property
    def capacity(self) -> int:
        return self.known.shape[0]

    def ensure_capacity(self, rows: int) -> None:
        """Make room for review rows [0, rows)."""
        if rows <= self.capacity:
            return
        if self.fixed:
            raise InputError(f"review_index {rows - 1} is outside the pseudo-label state of "
                             f"num_train_reviews={self.capacity}", field="model.num_train_reviews",
                             hint="set it to the number of reviews of the training split, or to "
                                  "null to size the state from the data")
        self._resize(max(rows, 2 * self.capacity))

    def _resize(self, rows: int) -> None:
        for name in PER_REVIEW:
            old = getattr(self, name)
            new = old.new_zeros((rows, *old.shape[1:]))
            keep = min(rows, old.shape[0])
            new[:keep] = old[:keep]
            setattr(self, name, new)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        incoming = state_dict.get(prefix + "known")
        if not self.fixed and incoming is not None and incoming.shape[0] != self.capacity:
            self._resize(incoming.shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def reset_epoch(self) -> None:
        for name in EPOCH_SUMS:
            getattr(self, name).zero_()

    def all_reduce(self) -> None:
        """Sum this epoch's statistics and agree on the labels over all processes."""
        import torch.distributed as dist

        rows = torch.tensor([self.capacity], device=self.known.device)
        dist.all_reduce(rows, op=dist.ReduceOp.MAX)
        if int(rows) > self.capacity:
            self._resize(int(rows))
        for name in EPOCH_SUMS:
            dist.all_reduce(getattr(self, name))
        known = self.known.to(self.pseudo_label.dtype)
        label_sum = self.pseudo_label * known[:, None]
        dist.all_reduce(label_sum)
        dist.all_reduce(known)
        self.known.copy_(known > 0)
        self.pseudo_label.copy_(label_sum / known.clamp_min(1.0)[:, None])


class MmssModel(RankingModel):
    """MM-SS ranking model. `forward(batch) -> ModelOutput(score [B], aux_loss = eq. 15)`.

    Built as `MmssModel(config, inputs)`: `config` the `model:` section (MmssOptions fields),
    `inputs` the run's ModelInputs (text_mode "static" or "features", text_dim, the static
    vectors, image_dim or None for a text-only run, whose items all count as without image).
    The aux loss and the pseudo-label bookkeeping happen in training mode only; in eval mode
    the model just scores (review_index then refers to another split and is not used).
    """

    def __init__(self, config: Mapping | None, inputs):
        super().__init__()
        require_text(inputs, "MM-SS")
        self.options = options = options_from_config(MmssOptions, config)
        unknown = sorted(set(options.subtasks) - set(SUBTASKS))
        if unknown or len(set(options.subtasks)) != len(options.subtasks):
            raise InputError(f"subtasks must be distinct names among {list(SUBTASKS)}, "
                             f"got {options.subtasks}", field="model.subtasks")
        # Keep the paper's order whatever order the config lists them in.
        self.subtasks = [s for s in SUBTASKS if s in options.subtasks]
        if not options.interaction_modeling and self.subtasks:
            raise InputError("interaction_modeling: false removes the interaction vectors the "
                             "subtasks learn from", field="model.interaction_modeling",
                             hint="set subtasks: [] as well (the paper's 'w/o module (b)' "
                                  "drops both)")
        d = options.hidden_dim
        self.product_tokens = TokenInput(inputs, "product", options.embedding_dropout,
                                         options.freeze_embeddings)
        self.review_tokens = TokenInput(inputs, "review", options.embedding_dropout,
                                        options.freeze_embeddings)
        self.product_text_projection = nn.Linear(self.product_tokens.dim, d)
        self.review_text_projection = nn.Linear(self.review_tokens.dim, d)

        self.product_image_encoder = roi_encoder(inputs, d, options)
        self.review_image_encoder = roi_encoder(inputs, d, options)
        if options.interaction_modeling:
            self.interactions = nn.ModuleDict({
                name: PairSelfAttention(d, options.interaction_layers, options.interaction_heads,
                                        options.interaction_ffn_dim, options.dropout)
                for name in SUBTASKS})
            fused_dim = len(SUBTASKS) * d
        else:
            self.interactions = None
            fused_dim = 4 * d
        self.dropout = nn.Dropout(options.dropout)
        self.global_projection = nn.Linear(fused_dim, options.task_dim)
        self.global_scorer = nn.Linear(options.task_dim, 1)
        self.subtask_projections = nn.ModuleDict(
            {s: nn.Linear(d, options.task_dim) for s in self.subtasks})
        self.subtask_heads = nn.ModuleDict({
            s: nn.Sequential(nn.Linear(options.task_dim, options.subtask_mlp_hidden), nn.GELU(),
                             nn.Linear(options.subtask_mlp_hidden, 1))
            for s in self.subtasks})
        if self.subtasks:
            self.log_variance = nn.Parameter(torch.zeros(len(self.subtasks)))  # log sigma_s^2
            self.state = PseudoLabelState(options.num_train_reviews, len(self.subtasks),
                                          options.task_dim)
            # DistributedDataParallel copies rank 0's buffers to every rank before each forward
            # unless told otherwise; that would wipe the other ranks' epoch sums. The state is
            # synchronised in on_epoch_end instead. (The attribute is how DDP takes a model's
            # ignore list.)
            self._ddp_params_and_buffers_to_ignore = [
                f"state.{name}" for name, _ in self.state.named_buffers()]
        else:
            self.log_variance = None
            self.state = None

    # ----------------------------------------------------------------- representations

    def represent(self, batch: Batch) -> dict[str, torch.Tensor]:
        """score [B], global_repr f_g* [B, d_g], and with subtasks subtask_repr f_s* [B, S, d_s],
        subtask_score [B, S] and subtask_valid [B, S] (the row has something on either side of
        that interaction; a row without product and review images has no p_v r_v)."""
        d = self.options.hidden_dim
        product_text_mask = batch["product_text_mask"].bool()
        review_text_mask = batch["review_text_mask"].bool()
        tp = self.product_text_projection(self.product_tokens(batch["product_text"],
                                                                 product_text_mask))
        tr = self.review_text_projection(self.review_tokens(batch["review_text"],
                                                               review_text_mask))
        vp, product_image_mask = encode_images(self.product_image_encoder, batch, "product", d)
        vr, review_image_mask = encode_images(self.review_image_encoder, batch, "review", d)
        if self.interactions is None:
            fused = torch.cat([masked_mean(tp, product_text_mask), masked_mean(vp, product_image_mask),
                               masked_mean(tr, review_text_mask), masked_mean(vr, review_image_mask)],
                              dim=-1)
            interactions = {}
        else:
            pairs = {"ptrt": (tp, product_text_mask, tr, review_text_mask),
                     "pvrv": (vp, product_image_mask, vr, review_image_mask),
                     "ptrv": (tp, product_text_mask, vr, review_image_mask),
                     "pvrt": (vp, product_image_mask, tr, review_text_mask),
                     "rtrv": (tr, review_text_mask, vr, review_image_mask)}
            interactions = {name: masked_soft_pool(*self.interactions[name](*pairs[name]))
                            for name in SUBTASKS}
            present = {name: pairs[name][1].any(dim=1) | pairs[name][3].any(dim=1)
                       for name in SUBTASKS}
            fused = torch.cat([interactions[name] for name in SUBTASKS], dim=-1)
        global_repr = nn.functional.gelu(self.global_projection(self.dropout(fused)))
        out = {"score": self.global_scorer(self.dropout(global_repr)).squeeze(-1),
               "global_repr": global_repr}
        if self.subtasks:
            subtask_repr = [nn.functional.gelu(self.subtask_projections[s](self.dropout(interactions[s])))
                            for s in self.subtasks]
            out["subtask_repr"] = torch.stack(subtask_repr, dim=1)
            out["subtask_score"] = torch.cat(
                [self.subtask_heads[s](r) for s, r in zip(self.subtasks, subtask_repr)], dim=-1)
            out["subtask_valid"] = torch.stack([present[s] for s in self.subtasks], dim=1)
        return out

    # ----------------------------------------------------------------- pseudo labels

    def _distance_scale(self) -> float:
        scale = self.options.distance_scale
        return float(self.options.task_dim if scale is None else scale)

    def observe(self, label: torch.Tensor, global_repr: torch.Tensor,
                subtask_repr: torch.Tensor) -> torch.Tensor:
        """Pseudo-label observations [B, S] from the current anchors (eq. 18, 21), in float32
        (the caller runs outside autocast: a precision matrix can overflow half precision)."""
        state, scale = self.state, self._distance_scale()
        label, global_repr, subtask_repr = label.float(), global_repr.float(), subtask_repr.float()
        chi_g = mahalanobis_distance(global_repr, state.anchor[0], state.precision[0], scale)
        chi_s = torch.stack([mahalanobis_distance(subtask_repr[:, j], state.anchor[j + 1],
                                                  state.precision[j + 1], scale)
                             for j in range(len(self.subtasks))], dim=-1)
        return ssp_label(label, chi_g, chi_s, self.options.correlation_ratio,
                         self.options.correlation_difference, self.options.epsilon)

    @torch.no_grad()
    def _record(self, index: torch.Tensor, label: torch.Tensor, pseudo_label: torch.Tensor,
                global_repr: torch.Tensor, subtask_repr: torch.Tensor,
                valid: torch.Tensor) -> None:
        """Add a training batch to this epoch's anchor statistics and observations.

        Rows where a subtask has no input (`valid` [B, S] False) count for neither. Runs
        outside autocast: the sums are float64 and the distances float32.
        """
        with torch.autocast(device_type=index.device.type, enabled=False):
            self._record_full_precision(index, label, pseudo_label, global_repr, subtask_repr,
                                        valid)

    def _record_full_precision(self, index, label, pseudo_label, global_repr, subtask_repr,
                               valid) -> None:
        state = self.state
        reprs = torch.cat([global_repr[:, None], subtask_repr], dim=1).double()    # [B, T, d]
        rows = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1).double()   # [B, T]
        weights = torch.sigmoid(torch.cat([label[:, None], pseudo_label], dim=1).double()) * rows
        state.weight_total += weights.sum(0)
        state.weighted_sum += (weights[..., None] * reprs).sum(0)
        state.count += rows.sum(0)
        state.total += (rows[..., None] * reprs).sum(0)
        state.outer += torch.einsum("bt,btd,bte->tde", rows, reprs, reprs)
        ready = state.anchor_ready[1:] & state.anchor_ready[0]                      # [S]
        observed = (valid & ready[None, :]).double()
        if bool(observed.any()):
            observation = self.observe(label, global_repr, subtask_repr).double()
            state.observation_sum.index_add_(0, index, observation * observed)
            state.observation_count.index_add_(0, index, observed)

    def _pseudo_labels(self, index: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """y_s [B, S] for the batch's reviews, set to y_g on a review's first sight (eq. 12)."""
        state = self.state
        if int(index.min()) < 0:
            raise InputError("review_index must be >= 0", field="review_index")
        state.ensure_capacity(int(index.max()) + 1)
        with torch.no_grad():
            new = ~state.known[index]
            state.pseudo_label[index[new]] = label[new, None].expand(-1, len(self.subtasks))
            state.known[index] = True
        return state.pseudo_label[index].clone()

    def subtask_loss(self, subtask_score: torch.Tensor, pseudo_label: torch.Tensor,
                     label: torch.Tensor,
                     valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 14-15: (uncertainty-weighted total, per-task losses [S]).

        Each task's loss is the mean over its valid rows (all rows when `valid` is None).
        """
        weights = sample_weights(pseudo_label, label)
        if valid is None:
            valid = torch.ones_like(weights, dtype=torch.bool)
        weights = weights * valid.to(weights.dtype)
        task_losses = ((weights * (subtask_score - pseudo_label).abs()).sum(dim=0)
                       / valid.sum(dim=0).clamp_min(1).to(weights.dtype))
        return uncertainty_weighted_loss(task_losses, self.log_variance), task_losses

    def on_epoch_end(self, epoch: int) -> None:
        """EWMA update of the pseudo labels (eq. 12) and the next epoch's anchors (eq. 17-18).

        The epoch number counts from the model's own state (restored with it on resume), so the
        trainer's numbering does not matter.
        """
        state = self.state
        if state is None:
            return
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            state.all_reduce()
        if not bool(state.count[0] > 0):
            return                    # no training rows this epoch: nothing to update
        state.epochs_done += 1
        i = int(state.epochs_done)
        observed = state.observation_count > 0                                       # [N, S]
        if i >= 2 and bool(observed.any()):
            beta = ewma_beta(i)
            mean_observation = (state.observation_sum[observed]
                                / state.observation_count[observed]).to(state.pseudo_label.dtype)
            state.pseudo_label[observed] = (beta * mean_observation
                                            + (1 - beta) * state.pseudo_label[observed])
        anchor, precision, usable = anchor_and_precision(
            state.weight_total, state.weighted_sum, state.count, state.total, state.outer,
            self.options.covariance_shrinkage)
        # A task without usable rows this epoch keeps its previous anchor (and readiness).
        state.anchor[usable] = anchor[usable].to(state.anchor.dtype)
        state.precision[usable] = precision[usable].to(state.precision.dtype)
        state.anchor_ready |= usable
        state.reset_epoch()

    # ----------------------------------------------------------------- forward

    def forward(self, batch: Batch) -> ModelOutput:
        out = self.represent(batch)
        if not (self.training and self.subtasks):
            return ModelOutput(score=out["score"])
        label = batch["label"].float()
        index = batch["review_index"].long()
        pseudo_label = self._pseudo_labels(index, label)
        valid = out["subtask_valid"]
        aux, task_losses = self.subtask_loss(out["subtask_score"], pseudo_label, label, valid)
        self._record(index, label, pseudo_label, out["global_repr"].detach(),
                     out["subtask_repr"].detach(), valid)
        logs = {f"subtask_loss_{s}": float(v) for s, v in zip(self.subtasks, task_losses.detach())}
        logs["pseudo_label_offset"] = float((pseudo_label - label[:, None]).abs().mean())
        return ModelOutput(score=out["score"], aux_loss=aux, logs=logs)

