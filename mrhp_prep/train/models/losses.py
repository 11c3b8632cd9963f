"""Ranking losses over the groups a training batch is made of (see `sampling.py`)."""

from __future__ import annotations

import torch


def group_hinge_loss(scores: torch.Tensor, labels: torch.Tensor, group_size: int,
                     margin: float | str) -> torch.Tensor:
    """Hinge loss of each group's positive against each of its negatives.

    scores, labels: [G * group_size], rows [g * group_size] the positive, then its negatives.
    margin "label-gap" (MCR's code): per negative max(0, (y+ - y-) - (s+ - s-)); a number m
    (the papers, m = 1): max(0, m - (s+ - s-)). Summed over a group's negatives, averaged over
    groups.
    """
    s = scores.float().view(-1, group_size)
    difference = s[:, :1] - s[:, 1:]
    if margin == "label-gap":
        y = labels.float().view(-1, group_size)
        wanted = y[:, :1] - y[:, 1:]
    else:
        wanted = torch.full_like(difference, float(margin))
    return torch.clamp(wanted - difference, min=0).sum(dim=1).mean()
