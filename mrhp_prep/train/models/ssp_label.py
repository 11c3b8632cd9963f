"""SSP-Label of MM-SS (section 4.4, eq. 10-15, appendix eq. 17-21): the maths of the pseudo
labels and the per-review state that carries them from epoch to epoch.

`mmss.py` holds the model and the reading of the paper it follows (its module docstring);
here are the pieces it is built from, each testable on its own: the EWMA coefficient, the
sample weights, the uncertainty weighting, the Mahalanobis distance to an anchor, the
observation of eq. 21 and the anchors with their precision matrices from running sums.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import InputError

def ewma_beta(epoch: int) -> float:
    """beta of eq. 12 for epoch i >= 2: 2 / (i + 1)."""
    return 2.0 / (epoch + 1)


def sample_weights(pseudo_label: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """W = tanh(|y_s - y_g|): pseudo_label [B, S], label [B] -> [B, S]."""
    return torch.tanh((pseudo_label - label[:, None]).abs())


def uncertainty_weighted_loss(task_losses: torch.Tensor,
                              log_variance: torch.Tensor) -> torch.Tensor:
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
    scatter = (second - mean[:, :, None] * anchor[:, None, :]
               - anchor[:, :, None] * mean[:, None, :] + anchor[:, :, None] * anchor[:, None, :])
    scatter = (scatter + scatter.transpose(1, 2)) / 2
    dim = scatter.shape[-1]
    level = scatter.diagonal(dim1=1, dim2=2).sum(-1) / dim
    usable = (count > 0) & (level > MIN_VARIANCE)
    identity = torch.eye(dim, dtype=scatter.dtype, device=scatter.device)
    shrunk = ((1 - shrinkage) * scatter
              + shrinkage * level.clamp_min(MIN_VARIANCE)[:, None, None] * identity)
    return anchor, torch.linalg.pinv(shrunk, hermitian=True), usable




PER_REVIEW = ("pseudo_label", "previous_label", "known", "updated_in")
EPOCH_SUMS = ("weight_total", "weighted_sum", "count", "total", "outer")


class PseudoLabelState(nn.Module):
    """Per-review pseudo labels and the running statistics of SSP-Label (all buffers).

    Per review (row N = review_index): pseudo_label [N, S], previous_label [N, S] (the label
    the last EWMA update replaced: the target until the next epoch with `next-epoch` timing),
    known [N] (seen at least once), updated_in [N, S] (the 1-based epoch of the label's last
    EWMA update, 0 = none). Per task
    (T = 1 + S, the global task first): anchor [T, d], precision [T, d, d], anchor_ready [T],
    and this epoch's running sums for the next anchors. With `capacity` None the per-review
    buffers grow (doubling) to the largest review_index seen, and a checkpoint's size is taken
    over on load; with a number they are allocated once and a larger index is an error.
    `epochs` mirrors the buffer `epochs_done` on the host (kept by `count_epoch` and on load),
    so a training step reads the epoch number without waiting for the device.
    """

    def __init__(self, capacity: int | None, num_subtasks: int, dim: int):
        super().__init__()
        self.fixed = capacity is not None
        rows, tasks = capacity or 0, 1 + num_subtasks
        self.register_buffer("pseudo_label", torch.zeros(rows, num_subtasks))
        self.register_buffer("previous_label", torch.zeros(rows, num_subtasks))
        self.register_buffer("known", torch.zeros(rows, dtype=torch.bool))
        self.register_buffer("updated_in", torch.zeros(rows, num_subtasks, dtype=torch.long))
        self.register_buffer("epochs_done", torch.zeros((), dtype=torch.long))
        self.register_buffer("anchor", torch.zeros(tasks, dim))
        self.register_buffer("precision", torch.zeros(tasks, dim, dim))
        self.register_buffer("anchor_ready", torch.zeros(tasks, dtype=torch.bool))
        self.register_buffer("weight_total", torch.zeros(tasks, dtype=torch.float64))
        self.register_buffer("weighted_sum", torch.zeros(tasks, dim, dtype=torch.float64))
        self.register_buffer("count", torch.zeros(tasks, dtype=torch.float64))
        self.register_buffer("total", torch.zeros(tasks, dim, dtype=torch.float64))
        self.register_buffer("outer", torch.zeros(tasks, dim, dim, dtype=torch.float64))
        self.epochs = 0

    def count_epoch(self) -> None:
        """One more epoch done (the buffer and its host mirror)."""
        self.epochs_done += 1
        self.epochs += 1

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
        if prefix + "previous_label" not in state_dict and prefix + "pseudo_label" in state_dict:
            # an earlier version's checkpoint: no update of the current epoch to undo
            state_dict[prefix + "previous_label"] = state_dict[prefix + "pseudo_label"].clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if isinstance(state_dict.get(prefix + "epochs_done"), torch.Tensor):
            self.epochs = int(state_dict[prefix + "epochs_done"])

    def reset_epoch(self) -> None:
        for name in EPOCH_SUMS:
            getattr(self, name).zero_()

    def all_reduce(self, epoch: int) -> None:
        """Sum this epoch's statistics and agree on the labels over all processes: a label
        (and the one it replaced) updated in `epoch` comes from the rank(s) that updated it,
        any other from the ranks that know the review (they hold the same value)."""
        import torch.distributed as dist

        rows = torch.tensor([self.capacity], device=self.known.device)
        dist.all_reduce(rows, op=dist.ReduceOp.MAX)
        if int(rows) > self.capacity:
            self._resize(int(rows))
        for name in EPOCH_SUMS:
            dist.all_reduce(getattr(self, name))
        fresh = (self.updated_in == epoch).to(self.pseudo_label.dtype)              # [N, S]
        known = self.known.to(self.pseudo_label.dtype)
        sums = {name: (getattr(self, name) * fresh, getattr(self, name) * known[:, None])
                for name in ("pseudo_label", "previous_label")}
        for value in (fresh, known, *(part for pair in sums.values() for part in pair)):
            dist.all_reduce(value)
        dist.all_reduce(self.updated_in, op=dist.ReduceOp.MAX)
        self.known.copy_(known > 0)
        for name, (fresh_sum, known_sum) in sums.items():
            getattr(self, name).copy_(torch.where(fresh > 0, fresh_sum / fresh.clamp_min(1.0),
                                                  known_sum / known.clamp_min(1.0)[:, None]))
