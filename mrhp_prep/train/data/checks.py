"""The training inputs are checked when they open: vectors, token ids, offsets and labels.

- when the stores open (`check_text_sources`, `check_text_store`): static vectors must be
  finite, token ids inside the vocabulary, character offsets inside the manifest text and as
  many as the tokens; every review label a finite number (`check_labels`);
- once the model is built (`check_ids_fit_encoder`): an ids store's token ids inside the
  embedding table of the transformer the model fine-tunes.

The checks inside the loop (every batch, loss and score) are in `loop/guards.py`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ...errors import InputError
from ...text.store import vectors_name

if TYPE_CHECKING:
    import torch

RERUN_HINTS = {"text": "re-run embed-text with --force on that input",
               "rois": "re-run extract-rois with --force (the image may be damaged: check it)"}


class NonFiniteError(InputError):
    """A NaN or inf reached a loss or a score; the message names where it came from."""


def first_few(values: Iterable, count: int = 5) -> str:
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
            f"{len(bad)} vector(s) hold NaN or inf (token ids {first_few(bad)}: "
            f"{first_few(words)})",
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

        # This part's values bound as defaults: a call can never see a later part's.
        def fail(row: int, field: str, message: str, *, where=where, part=part,
                 batch=batch) -> InputError:
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
    from ..models.text_encoder import FineTunedEncoder

    encoders = [m for m in model.modules() if isinstance(m, FineTunedEncoder)]
    if not encoders:
        return
    size = min(int(m.transformer.get_input_embeddings().num_embeddings) for m in encoders)
    for shards in sources.text.values():
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
                f"{first_few(table.review_ids[bad])})",
                file=str(sources.manifest.table_path("reviews")), field="label",
                hint="re-run ingest with --force on the release files")


def check_text_sources(sources) -> None:
    """Every text store field of a FeatureSources: vectors, token ids and offsets."""
    manifest = sources.manifest
    for name, frame, id_column in (("product", manifest.products, "product_id"),
                                   ("review", manifest.reviews, "review_id")):
        shards = sources.text.get(name)
        if shards is None:
            continue
        check_vectors(shards.vectors, shards.vocab,
                      str(shards.folder / vectors_name(name)))
        lengths = pd.Series(frame["text"].str.len().to_numpy(dtype=np.float64),
                            index=frame[id_column].to_numpy(dtype=object))
        check_text_store(shards, lengths)
