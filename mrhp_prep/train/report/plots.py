"""The pictures of a run folder: training curves and score distributions (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ...atomic import atomic_path
from .metrics import METRICS


def plot_curves(path: Path, history: Sequence[dict], monitor: str, best_epoch: int) -> None:
    """curves.png: training losses and dev metrics per epoch, the best epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("loss", "total"), ("rank_loss", "ranking"), ("aux_loss", "auxiliary")):
        if any(key in r for r in history):
            left.plot(epochs, [r.get(key, np.nan) for r in history], marker="o", label=label)
    left.set(title="training loss", xlabel="epoch")
    left.legend()
    for metric in METRICS:
        key = f"dev_{metric}"
        if any(key in r for r in history):
            right.plot(epochs, [100 * r.get(key, np.nan) for r in history], marker="o",
                       label=metric + (" (monitored)" if metric == monitor else ""))
    if best_epoch:
        right.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch {best_epoch}")
    right.set(title="dev metrics (%)", xlabel="epoch")
    right.legend()
    for axis in (left, right):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_scores(path: Path, frames: dict[str, pd.DataFrame]) -> None:
    """scores.png: the distribution of predicted scores per label, one panel per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = {k: v for k, v in frames.items() if len(v)}
    if not frames:
        return
    fig, axes = plt.subplots(1, len(frames), figsize=(5 * len(frames), 4), squeeze=False)
    for axis, (split, frame) in zip(axes[0], frames.items()):
        labels = sorted(frame["label"].unique())
        axis.boxplot([frame.loc[frame["label"] == y, "score"] for y in labels],
                     tick_labels=[f"{y:g}" for y in labels])
        axis.set(title=f"{split}: predicted score by label", xlabel="label", ylabel="score")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
