"""Non-finite values and broken token data stop a run with an error naming their source.

Where each check sits:

- when the stores open (`check_text_store`): static vectors must be finite, token ids inside
  the vocabulary, character offsets inside the manifest text and as many as the tokens;
- once the model is built (`check_ids_fit_encoder`): an ids store's token ids inside the
  embedding table of the transformer the model fine-tunes;
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

from ..errors import InputError

RERUN_HINTS = {"text": "re-run embed-text with --force on that input",
               "rois": "re-run extract-rois with --force (the image may be damaged: check it)"}


class NonFiniteError(InputError):
    """A NaN or inf reached a loss or a score; the message names where it came from."""


def _first(values: Iterable, count: int = 5) -> str:
    values = list(values)
    return ", ".join(map(str, values[:count])) + (" ..." if len(values) > count else "")


# -- when the stores open ---------------------------------------------------------------------
def _offsets_of(batch, name: str) -> np.ndarray:
    """[rows + 1] offsets of a list column."""
    return batch.column(name).offsets.to_numpy().astype(np.int64, copy=False)


def check_vectors(vectors: np.ndarray | None, vocab: Sequence[str] | None, path: str) -> None:
    """Static vectors [V, D]: every row finite."""
    if vectors is None:
        return
    bad = np.flatnonzero(~np.isfinite(np.asarray(vectors)).all(axis=1))
    if len(bad):
        words = [vocab[i] if vocab is not None and i < len(vocab) else "?" for i in bad[:5]]
        raise NonFiniteError(
            f"{len(bad)} vector(s) hold NaN or inf (token ids {_first(bad)}: {_first(words)})",
            file=path, row=int(bad[0]), field="vectors", hint=RERUN_HINTS["text"])


def check_text_store(shards, text_lengths: pd.Series) -> None:
    """Token ids and character offsets of one field of an embed-text store.

    `shards` is a `TextShards`; `text_lengths` [ids] is the length of each id's manifest text,
    indexed by id (ids the manifest lacks are not checked: the join leaves them out). Raises
    an InputError naming the shard file, the row and the field.
    """
    text_lengths = text_lengths[~text_lengths.index.duplicated()]
    vocab_size = len(shards.vocab) if shards.vocab is not None else None
    for part, (offsets, flat, char_offsets, starts, ends) in enumerate(shards.columns()):
        batch = shards.batch(part)
        where = shards.where(part, 0)[0]

        def fail(row: int, field: str, message: str) -> InputError:
            return InputError(message, file=where, field=field, hint=RERUN_HINTS["text"],
                              row=f"{shards.where(part, row)[1]} "
                                  f"(id {batch.column('id')[row]})")

        rows = len(offsets) - 1
        counts = np.diff(offsets)
        for name, column_offsets in (("token_start", char_offsets),
                                     ("token_end", _offsets_of(batch, "token_end"))):
            if not np.array_equal(np.diff(column_offsets), counts):
                row = int(np.flatnonzero(np.diff(column_offsets) != counts)[0])
                raise fail(row, name, f"{name} holds {int(np.diff(column_offsets)[row])} "
                                      f"offsets for {int(counts[row])} tokens")
        row_of = np.repeat(np.arange(rows), np.diff(char_offsets))
        if shards.value_column == "token_ids" and len(flat):
            high = vocab_size if vocab_size is not None else np.iinfo(np.int64).max
            out = np.flatnonzero((flat < 0) | (flat >= high))
            if len(out):
                row = int(np.repeat(np.arange(rows), counts)[out[0]])
                limit = f"0 .. {vocab_size - 1}" if vocab_size is not None else ">= 0"
                raise fail(row, "token_ids", f"token id {int(flat[out[0]])} is outside the "
                                             f"vocabulary ({limit})")
        if not len(starts):
            continue
        ids = batch.column("id").to_numpy(zero_copy_only=False)
        length = text_lengths.reindex(ids).to_numpy(dtype=np.float64)
        limit = np.repeat(length, np.diff(char_offsets))
        special = (starts == -1) & (ends == -1)    # [CLS], [SEP]: they cover no text
        bad = ~special & ((starts < 0) | (ends < starts)
                          | (ends > np.nan_to_num(limit, nan=np.inf)))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise fail(int(row_of[first]), "token_start/token_end",
                       f"token offsets [{int(starts[first])}, {int(ends[first])}) fall outside "
                       f"the text ({int(limit[first]) if math.isfinite(limit[first]) else '?'}"
                       f" characters)")


def check_ids_fit_encoder(sources, model: torch.nn.Module) -> None:
    """Token ids of an ids store must index the embedding table of the transformer the model
    fine-tunes: an id beyond it (a store tokenized for another model) would crash the lookup,
    on a GPU with a device-side assert. Raises an InputError naming the shard file and row."""
    from .models.text_encoder import FineTunedEncoder

    encoders = [m for m in model.modules() if isinstance(m, FineTunedEncoder)]
    if not encoders:
        return
    size = min(int(m.transformer.get_input_embeddings().num_embeddings) for m in encoders)
    for name, shards in sources.text.items():
        for part, (offsets, flat, *_) in enumerate(shards.columns()):
            out = np.flatnonzero(np.asarray(flat) >= size)
            if not len(out):
                continue
            row = int(np.searchsorted(offsets, out[0], side="right") - 1)
            batch = shards.batch(part)
            raise InputError(
                f"token id {int(flat[out[0]])} is outside the vocabulary of the text encoder "
                f"{encoders[0].base_name!r} ({size} ids): the store was tokenized for another "
                f"model", file=shards.where(part, row)[0], field="token_ids",
                row=f"{shards.where(part, row)[1]} (id {batch.column('id')[row]})",
                hint=f"re-run embed-text --mode ids --model {encoders[0].base_name} --force")


def check_labels(sources, splits: Mapping) -> None:
    """Every review label of the splits (name -> ReviewDataset) is a finite number."""
    for name, dataset in splits.items():
        table = dataset.table
        bad = np.flatnonzero(~np.isfinite(table.labels))
        if len(bad):
            raise NonFiniteError(
                f"{len(bad)} review label(s) of split {name} are NaN or inf (reviews "
                f"{_first(table.review_ids[bad])})",
                file=str(sources.manifest.path / "reviews.parquet"), field="label",
                hint="re-run ingest with --force on the release files")


# -- in every batch -----------------------------------------------------------------------------
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


# -- at every step ----------------------------------------------------------------------------
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
    return (f"the model weights became non-finite before this step ({_first(bad, 3)}): "
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


# -- at every scoring -------------------------------------------------------------------------
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
        f"{_first(frame['review_id'].iloc[bad])}); no metric or predictions are written. "
        f"Likely source: {source or 'the model weights diverged: lower train.lr'}",
        field="score")


def check_text_sources(sources) -> None:
    """Every text store field of a FeatureSources: vectors, token ids and offsets."""
    manifest = sources.manifest
    for name, frame, id_column in (("product", manifest.products, "product_id"),
                                   ("review", manifest.reviews, "review_id")):
        shards = sources.text.get(name)
        if shards is None:
            continue
        check_vectors(shards.vectors, shards.vocab,
                      str(shards.folder / f"vectors-{name}.npy"))
        lengths = pd.Series(frame["text"].str.len().to_numpy(dtype=np.float64),
                            index=frame[id_column].to_numpy(dtype=object))
        check_text_store(shards, lengths)


def load_checkpoint_for(model: torch.nn.Module, path, model_name: str) -> None:
    """Load a checkpoint's weights into `model`, refusing one of another model or shape."""
    from . import checkpoints

    load_checkpoint_state(model, checkpoints.load(path), path, model_name)


def load_checkpoint_state(model: torch.nn.Module, payload: dict, path, model_name: str) -> None:
    """Load the weights of a read checkpoint `payload` (from `path`) into `model`; a payload
    of another model or shape is an InputError naming the file."""
    from . import checkpoints

    try:
        checkpoints.load_model_state(model, payload["model"])
    except (KeyError, ValueError, RuntimeError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"the checkpoint does not fit the run's {model_name} model: {detail}",
                         file=str(path), field="model",
                         hint="use a checkpoint this run wrote (best, last or epoch-NNN), or "
                              "pass the run folder the checkpoint belongs to") from exc


# -- predictions files ------------------------------------------------------------------------
def check_prediction_rows(frame: pd.DataFrame, path: str) -> None:
    """A predictions table to evaluate: rows present, ids present and unique, finite numbers.

    Row numbers in the messages count data rows from 0 (the header is not a row).
    """
    if not len(frame):
        raise InputError("the predictions file has no rows", file=path,
                         hint="score some reviews first (mrhp-prep predict or train)")
    for column in ("product_id", "review_id"):
        if column not in frame.columns:
            continue
        null = np.flatnonzero(frame[column].isna().to_numpy())
        if len(null):
            raise InputError(f"{len(null)} row(s) have no {column} (rows {_first(null)})",
                             file=path, row=int(null[0]), field=column,
                             hint=f"every row needs a {column}; fix or drop those rows")
    for column in ("label", "score"):
        if column not in frame.columns:
            continue
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(np.isinf(values))
        if len(bad):
            raise InputError(f"{values[bad[0]]} is not a finite number (rows {_first(bad)})",
                             file=path, row=int(bad[0]), field=column,
                             hint="every row needs a finite numeric label and score")
    if "review_id" in frame.columns:
        ids = frame["review_id"].astype(str)
        repeated = np.flatnonzero(ids.duplicated(keep=False).to_numpy())
        if len(repeated):
            raise InputError(
                f"{ids.iloc[repeated].nunique()} review id(s) appear more than once "
                f"(e.g. {ids.iloc[repeated[0]]!r} at rows "
                f"{_first(np.flatnonzero((ids == ids.iloc[repeated[0]]).to_numpy()))})",
                file=path, row=int(repeated[0]), field="review_id",
                hint="each review must be scored once; remove the repeated rows")
