"""The report's own picture: how the per-product metrics of a split are spread."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from ..errors import InputError

METRICS_SHOWN = (("ndcg@3", "NDCG@3"), ("map", "MAP"))


def per_product_histogram(per_product: pd.DataFrame, split: str, source: str) -> bytes:
    """PNG bytes: histograms of the per-product NDCG@3 and MAP (in %) of `split`.

    A value that is not finite is an InputError naming `source` (the predictions file): it
    never reaches the plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS_SHOWN), figsize=(9, 3.2), squeeze=False)
    for axis, (column, title) in zip(axes[0], METRICS_SHOWN):
        values = per_product[column].to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            plt.close(fig)
            bad = per_product["product_id"].iloc[int(np.flatnonzero(~np.isfinite(values))[0])]
            raise InputError(f"{title} of product {bad!r} is not a number", file=source,
                             hint="the predictions hold a score or label that is not finite")
        axis.hist(100 * values, bins=np.linspace(0, 100, 21), color="#4a78c2",
                  edgecolor="white")
        axis.axvline(100 * values.mean(), color="#d62728", linestyle="--",
                     label=f"mean {100 * values.mean():.2f}")
        axis.set(title=f"{split}: {title} per product", xlabel=f"{title} (%)",
                 ylabel="products")
        axis.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()
