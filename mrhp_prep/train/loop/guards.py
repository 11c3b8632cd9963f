"""Checks inside the loop: a NaN or inf in a batch, a loss or a score stops the run with an
error naming its source (the store item, the step, or the weights that diverged).

- in every batch, on its device (`finite_inputs`, then `check_batch`): RoI and text features
  must be finite; `diagnose_rows` reads the batch's rows again to name the store file, the
  item and the field. The flag is read when the step reads its loss anyway, so it costs no
  extra synchronisation;
- at every training step (`check_losses`): a NaN or inf loss stops training, naming the step
  and whether the weights (or the loss itself) diverged;
- at every scoring (`check_scores`): no metric, best epoch, predictions file or finished
  folder is made from a non-finite score.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..data.checks import RERUN_HINTS, NonFiniteError, first_few


def finite_inputs(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A 0-d bool tensor on the batch's device: the sum of every float tensor is finite.

    A NaN or inf makes its tensor's sum non-finite; a sum is about ten times cheaper than an
    element-wise test (on a CPU). A False that only comes from a sum overflowing is told
    apart by `check_batch`."""
    sums = [t.sum(dtype=torch.float32) for t in batch.values() if t.is_floating_point()]
    return torch.isfinite(torch.stack(sums)).all() if sums else torch.ones((), dtype=torch.bool)


def check_batch(finite: torch.Tensor, batch: Mapping[str, torch.Tensor], *,
                rows: Sequence[int], dataset, what: str) -> None:
    """Raise a NonFiniteError naming the store item when the batch (checked by `finite_inputs`)
    holds a NaN or inf. `rows` are its row indices into `dataset`; `what` names the place."""
    if bool(finite) or all(torch.isfinite(t).all() for t in batch.values()
                           if t.is_floating_point()):
        return
    source = diagnose_rows(dataset, rows) or "a float input of the batch"
    raise NonFiniteError(f"NaN or inf in the input of {what}: {source}", field="features")


def check_losses(losses: Mapping[str, float], *, epoch: int, step: int,
                 model: torch.nn.Module) -> None:
    """Raise a NonFiniteError when a loss of this step is NaN or inf, naming the likely source
    (the batch's inputs were checked by `check_batch` before). `epoch`, `step` are 1-based."""
    bad = [key for key in ("loss", "rank_loss", "aux_loss")
           if key in losses and not math.isfinite(losses[key])]
    if not bad:
        return
    values = ", ".join(f"{k}={losses[k]}" for k in ("loss", "rank_loss", "aux_loss") if k in losses)
    largest = max((float(p.detach().abs().max()) for p in model.parameters() if p.numel()),
                  default=0.0)
    source = _diagnose_weights(model) or (
        f"inputs and weights are finite (largest weight {largest:.3g}): {bad[-1]} itself "
        f"overflowed; lower train.lr, keep train.grad_clip > 0, or set train.amp=false")
    raise NonFiniteError(f"non-finite loss at epoch {epoch}, step {step} ({values}). "
                         f"Likely source: {source}", field=bad[-1])


def _diagnose_weights(model: torch.nn.Module) -> str | None:
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if not bad:
        return None
    return (f"the model weights became non-finite before this step ({first_few(bad, 3)}): "
            f"training diverged; lower train.lr or keep train.grad_clip > 0")


def diagnose_rows(dataset, rows: Iterable[int]) -> str | None:
    """Name the first store item holding a NaN/inf among `rows` of a ReviewDataset, or None."""
    if dataset is None:
        return None
    sources, table = dataset.sources, dataset.table
    for i in rows:
        i = int(i)
        item = dataset[i]
        p = int(table.product_index[i])
        for field, store_id in (("product_text", table.products[p]),
                                ("review_text", table.review_ids[i])):
            values = item.get(field)
            if values is not None and values.dtype.kind == "f" and not np.isfinite(values).all():
                name = field.split("_")[0]
                location = (table.product_text[p] if name == "product" else table.review_text[i])
                shards = sources.text[name]
                return (f"the text store {shards.where(int(location[0]), 0)[0]}, "
                        f"{name} {store_id}, field 'features' holds NaN or inf; "
                        + RERUN_HINTS["text"])
        for field, item_id in (("product_image", table.products[p]),
                               ("review_image", table.review_ids[i])):
            values = item.get(field)
            if values is not None and not np.isfinite(values).all():
                return _diagnose_images(sources, item_id)
    return None


def _diagnose_images(sources, item_id: str) -> str:
    rois = sources.rois
    for image_id in sources.item_images.get(item_id, ()):
        block = rois.features(image_id)
        bad = np.flatnonzero(~np.isfinite(block).all(axis=1))
        if len(bad):
            start = int(rois.offsets[rois.index[image_id]])
            return (f"the RoI store {rois.path}, image {image_id} of item {item_id}, field "
                    f"'features' rows {start + int(bad[0])}..{start + int(bad[-1])} hold NaN "
                    f"or inf; " + RERUN_HINTS["rois"])
    return f"the RoI store {rois.path}, item {item_id}, field 'features' holds NaN or inf"


def check_scores(frame: pd.DataFrame, what: str, dataset=None) -> None:
    """Refuse predictions (product_id, review_id, score) holding a NaN or inf score.

    `what` says which scoring it was (e.g. "dev split after epoch 3"); `dataset`, when given,
    is searched for the input that caused it.
    """
    scores = frame["score"].to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(scores))
    if not len(bad):
        return
    source = diagnose_rows(dataset, bad[:64]) if dataset is not None else None
    raise NonFiniteError(
        f"{len(bad)} of {len(scores)} scores of the {what} are NaN or inf (reviews "
        f"{first_few(frame['review_id'].iloc[bad])}); no metric or predictions are written. "
        f"Likely source: {source or 'the model weights diverged: lower train.lr'}",
        field="score")
