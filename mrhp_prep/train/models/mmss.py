"""MM-SS: multimodal interaction modelling with self-supervised multi-task learning.

The model of "Multimodal Interaction Modeling via Self-Supervised Multi-Task Learning for Review
Helpfulness Prediction" (Gong, Jia, Jing); sections and equations below refer to it.

1. Features (4.1, eq. 2): the per-token states of one BERT trained end to end with the model
   (an ids store; `text_encoder.py`), or frozen features, or static word vectors, projected
   to d; RoI features projected to d and self-attended, per item (as MCR).
2. Interactions (4.2, eq. 3-5): five SoftPool(SelfAttn([X; Y])) vectors [B, d] for the pairs
   p_t r_t, p_v r_v, p_t r_v, p_v r_t, r_t r_v (t = text, v = vision, p = product, r = review).
3. Global head (4.3, eq. 6-8): F_c = concat of the five [B, 5d] -> f_g* = GELU(Linear) [B, d_g]
   -> y_hat_g = Linear -> the score.
4. Subtasks (4.4, eq. 9): per interaction s, f_s* = GELU(Linear(f_s)) [B, d_s], y_hat_s = MLP.
   Their targets are pseudo labels y_s (SSP-Label, eq. 10-12, appendix eq. 17-21), kept per
   training review in buffers indexed by the batch's `review_index`:
   - y_s^(1) = y_g: the label of every review during epoch 1 (eq. 12, i = 1);
   - eq. 11-12: the first time epoch i >= 2 meets a review, the model computes the
     observation y_hat_s^(i) from the distances of f_g* and f_s* to their anchors (eq. 17-21,
     below) and sets y_s^(i) = beta * y_hat_s^(i) + (1 - beta) * y_s^(i-1), beta = 2 / (i + 1).
     When that label first becomes a target is `pseudo_label_timing`:
     `next-epoch` (default): the batches of epoch i train on y_s^(i-1) and y_s^(i) is first a
     target in epoch i + 1, as in Self-MM (the paper's ref. [37], which updates a label after
     the batch's loss) and as eq. 11 words it ("y_hat_s^(i) is the estimated value after the
     i-th epoch"); the first non-zero subtask loss is therefore in epoch 3.
     `same-epoch`: y_s^(i) is the target of the batch that computes it and of the review's
     later batches of epoch i (eq. 14's index i read literally); epoch 2 already trains on it;
   - the subtask loss (eq. 14) per task is mean_rows W * |y_hat_s - y_s| with the sample
     weight W = tanh(|y_s - y_g|), and the five are combined with homoscedastic uncertainty
     (eq. 15): sum_s L_s / (2 sigma_s^2) + log(sigma_1 ... sigma_5), learning
     eta_s = log sigma_s^2. This is the model's `aux_loss`; the trainer adds the pairwise
     ranking loss (eq. 13, 16).
   - a task whose loss is identically zero in a batch (every W = 0: the epochs before the
     first updated label is a target, where y_s = y_g, or no row with its inputs) leaves
     eq. 15 for that batch, uncertainty term included, and its head is kept out of the graph:
     with W = 0 the log sigma_s term alone would pull sigma_s down step after step and hand
     the task an inflated weight the epoch its loss switches on. Each log sigma_s^2 is a
     parameter of its own (`log_variance[s]`), so an inactive task's gets no gradient at all
     and Adam leaves it bit for bit as it was, momentum and weight decay included (one shared
     tensor would take a step on its momentum). When no task is active the aux loss is None.

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
  end), so observations start in epoch 2, which is also the paper's first EWMA update (i = 2);
- a row with nothing on either side of an interaction (p_v r_v of a product and a review
  without images, and so of every row of a text-only run) has no f_s to speak of: it takes no
  part in that subtask's loss, anchor or observations, and keeps its pseudo label. A task whose
  representation does not vary at all gets no anchor (its distances would be meaningless).

Multi-process training (torchrun): each rank accumulates its own rows during an epoch (the
state's buffers are on DistributedDataParallel's ignore list, so they are not overwritten by
rank 0's at each forward) and `on_epoch_end` sums the statistics of all ranks and takes each
review's label from the rank that updated it, so every rank ends the epoch with the same labels
and anchors.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from ...errors import InputError
from ..settings.model_settings import ENCODER_KEYS, SUBTASKS
from ..settings.typed_sections import section_fields
from .base import Batch, ModelOutput, RankingModel
from .layers import TokenInput, require_text
from .masked_layers import (PairSelfAttention, encode_images, masked_mean, masked_soft_pool,
                              roi_encoder)
from .ssp_label import (PseudoLabelState, anchor_and_precision, ewma_beta,
                        mahalanobis_distance, sample_weights, ssp_label,
                        uncertainty_weighted_loss)

class MmssOptions(section_fields("model", "mmss", exclude=ENCODER_KEYS)):
    """MM-SS hyperparameters: the `model:` settings declared in `settings/model_settings.py`
    (defaults the paper's, appendix A.2, where it gives them; docs/settings.md), the text
    encoder's keys left to `text_encoder.py`."""


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
        self.options = options = MmssOptions.from_config(config)
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
            # log sigma_s^2, one parameter per task: an inactive task's takes no Adam step
            self.log_variance = nn.ParameterDict(
                {s: nn.Parameter(torch.zeros(())) for s in self.subtasks})
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
        subtask_score [B, S] (also as subtask_scores, a list of S tensors [B] straight from each
        head, so that a loss can leave a head out of the graph) and subtask_valid [B, S] (the
        row has something on either side of that interaction; a row without product and
        review images has no p_v r_v)."""
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
            fused = torch.cat([masked_mean(tp, product_text_mask),
                               masked_mean(vp, product_image_mask),
                               masked_mean(tr, review_text_mask),
                               masked_mean(vr, review_image_mask)], dim=-1)
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
            subtask_repr = [
                nn.functional.gelu(self.subtask_projections[s](self.dropout(interactions[s])))
                for s in self.subtasks]
            out["subtask_repr"] = torch.stack(subtask_repr, dim=1)
            out["subtask_scores"] = [self.subtask_heads[s](r).squeeze(-1)
                                     for s, r in zip(self.subtasks, subtask_repr)]
            out["subtask_score"] = torch.stack(out["subtask_scores"], dim=-1)
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
    def _record(self, label: torch.Tensor, pseudo_label: torch.Tensor, global_repr: torch.Tensor,
                subtask_repr: torch.Tensor, valid: torch.Tensor) -> None:
        """Add a training batch to this epoch's anchor statistics (float64 sums, outside
        autocast). Rows where a subtask has no input (`valid` [B, S] False) do not count for it.
        """
        with torch.autocast(device_type=label.device.type, enabled=False):
            self._record_full_precision(label, pseudo_label, global_repr, subtask_repr, valid)

    def _record_full_precision(self, label, pseudo_label, global_repr, subtask_repr,
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

    @torch.no_grad()
    def _ewma_update(self, index: torch.Tensor, label: torch.Tensor, pseudo_label: torch.Tensor,
                     global_repr: torch.Tensor, subtask_repr: torch.Tensor,
                     valid: torch.Tensor) -> torch.Tensor:
        """Eq. 11-12 for epoch i >= 2: y_s^(i) = beta y_hat_s^(i) + (1 - beta) y_s^(i-1) at the
        review's first batch of the epoch (the label it replaces is kept in `previous_label`);
        returns the batch's current labels [B, S].

        Only (review, task) pairs with inputs (`valid` [B, S]) and a task with an anchor are
        updated. Runs outside autocast (the distances are float32).
        """
        state = self.state
        epoch = state.epochs + 1
        if epoch < 2:
            return pseudo_label
        # no early return when nothing is due: reading `due` on the host would wait for the
        # device every step, and a step with nothing due writes back the labels it read
        ready = state.anchor_ready[1:] & state.anchor_ready[0]                      # [S]
        due = valid & ready[None, :] & (state.updated_in[index] < epoch)            # [B, S]
        with torch.autocast(device_type=index.device.type, enabled=False):
            observation = self.observe(label, global_repr, subtask_repr)
        beta = ewma_beta(epoch)
        updated = beta * observation + (1 - beta) * pseudo_label.float()
        state.previous_label[index] = torch.where(due, pseudo_label, state.previous_label[index])
        state.pseudo_label[index] = torch.where(due, updated.to(pseudo_label.dtype), pseudo_label)
        state.updated_in[index] = torch.where(due, epoch, state.updated_in[index])
        return state.pseudo_label[index].clone()      # a review twice in the batch: one label

    def _targets(self, index: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """The labels the batch trains on [B, S]: `current` with `same-epoch` timing; with
        `next-epoch`, a label updated in this epoch is replaced by the one it replaced."""
        if self.options.pseudo_label_timing == "same-epoch":
            return current
        state = self.state
        fresh = state.updated_in[index] == state.epochs + 1
        return torch.where(fresh, state.previous_label[index], current)

    def _pseudo_labels(self, index: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """y_s [B, S] for the batch's reviews, set to y_g on a review's first sight (eq. 12)."""
        state = self.state
        low, high = torch.stack(torch.aminmax(index)).tolist()     # one wait for the device
        if low < 0:
            raise InputError("review_index must be >= 0", field="review_index")
        state.ensure_capacity(high + 1)
        with torch.no_grad():
            new = ~state.known[index]
            state.pseudo_label[index[new]] = label[new, None].expand(-1, len(self.subtasks))
            state.known[index] = True
        return state.pseudo_label[index].clone()

    def subtask_loss(self, subtask_scores: list[torch.Tensor], pseudo_label: torch.Tensor,
                     label: torch.Tensor, valid: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Eq. 14-15: (uncertainty-weighted total, per-task losses [S], detached).

        subtask_scores: S tensors [B] (y_hat_s), pseudo_label [B, S], label [B], valid [B, S].
        Each task's loss is the mean over its valid rows (all rows when `valid` is None). Only
        tasks with a non-zero sample weight enter eq. 15 (their heads and log sigma^2 only);
        the total is None when there is none, so nothing of the subtasks moves on a loss that
        is identically zero.
        """
        weights = sample_weights(pseudo_label, label)
        if valid is None:
            valid = torch.ones_like(weights, dtype=torch.bool)
        weights = weights * valid.to(weights.dtype)
        rows = valid.sum(dim=0).clamp_min(1).to(weights.dtype)                     # [S]

        def task_loss(j: int, score: torch.Tensor) -> torch.Tensor:
            return (weights[:, j] * (score - pseudo_label[:, j]).abs()).sum() / rows[j]

        task_losses = torch.stack([task_loss(j, score.detach())
                                   for j, score in enumerate(subtask_scores)])
        active = [j for j, on in enumerate((weights > 0).any(dim=0).tolist()) if on]
        if not active:
            return None, task_losses
        active_losses = torch.stack([task_loss(j, subtask_scores[j]) for j in active])
        log_variance = torch.stack([self.log_variance[self.subtasks[j]] for j in active])
        return uncertainty_weighted_loss(active_losses, log_variance), task_losses

    def log_variances(self) -> torch.Tensor:
        """[S] log sigma_s^2 in the order of `self.subtasks` (a copy, for reading)."""
        return torch.stack([self.log_variance[s].detach() for s in self.subtasks])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints of earlier versions hold one [S] tensor `log_variance`
        stacked = state_dict.get(prefix + "log_variance")
        if isinstance(stacked, torch.Tensor) and self.subtasks and \
                stacked.shape == (len(self.subtasks),):
            state_dict.pop(prefix + "log_variance")
            for j, name in enumerate(self.subtasks):
                state_dict[f"{prefix}log_variance.{name}"] = stacked[j].clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def on_epoch_end(self, epoch: int) -> None:
        """The next epoch's anchors (eq. 17-18) from this epoch's rows; the epoch count.

        The epoch number counts from the model's own state (restored with it on resume), so the
        trainer's numbering does not matter.
        """
        state = self.state
        if state is None:
            return
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            state.all_reduce(state.epochs + 1)
        if not bool(state.count[0] > 0):
            return                    # no training rows this epoch: nothing to update
        state.count_epoch()
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
        valid = out["subtask_valid"]
        global_repr, subtask_repr = out["global_repr"].detach(), out["subtask_repr"].detach()
        pseudo_label = self._ewma_update(index, label, self._pseudo_labels(index, label),
                                         global_repr, subtask_repr, valid)
        targets = self._targets(index, pseudo_label)
        aux, task_losses = self.subtask_loss(out["subtask_scores"], targets, label, valid)
        self._record(label, pseudo_label, global_repr, subtask_repr, valid)
        logs = {f"subtask_loss_{s}": v for s, v in zip(self.subtasks, task_losses)}
        logs["pseudo_label_offset"] = (targets - label[:, None]).abs().mean().detach()
        return ModelOutput(score=out["score"], aux_loss=aux, logs=logs)

