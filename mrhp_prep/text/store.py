"""The embed-text output folder: its files, and the reader that `train` and `predict` use.

One folder (written by `embed.py`, joined by `merge.py`) holds:

    product-NNNNN.arrow, review-NNNNN.arrow   the shards (`shards.py`: schema and writer)
    vocab-product.txt, vocab-review.txt       static mode: the vocabularies (`vocab.py`)
    vectors-product.npy, vectors-review.npy   static mode: float32 [V, D]; row i is id i
    MANIFEST.json                             mode, dim, counts, each file's size and SHA-256

`TextShards` opens one field of a finished folder after checking its files against the
manifest (`verify.py`); shards are memory-mapped and read zero-copy, keeping flat numpy
views of the list columns plus an (id, part, row) table that training joins with the
manifest. It reopens itself in a new process (DataLoader workers).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..arrow_files import ArrowParts, flat, list_column
from ..atomic import atomic_path
from ..errors import InputError
from ..verify import read_verified
from .shards import shard_paths
from .vocab import Vocabulary

STAGE = "embed-text"
FIELDS = ("product", "review")
_RERUN = "re-run embed-text with --force"


def vocab_name(field: str) -> str:
    return f"vocab-{field}.txt"


def vectors_name(field: str) -> str:
    return f"vectors-{field}.npy"


def static_files(folder: str | Path) -> list[str]:
    """The vocabulary and vectors files in `folder`, by name."""
    folder = Path(folder)
    return [name for field in FIELDS for name in (vocab_name(field), vectors_name(field))
            if (folder / name).is_file()]


def save_vectors(path: str | Path, matrix: np.ndarray) -> None:
    """A vectors file, atomically (plain .npy, no pickled objects)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, matrix, allow_pickle=False)


def load_vectors(path: str | Path) -> np.ndarray:
    """A vectors file, memory-mapped: [V, D]."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


class TextShards:
    """One field of an embed-text output: tokens, character offsets, ids or frozen features.

    `mode` is "static" (ids into `vectors`), "ids" (transformer ids) or "features".
    `item(part, row)` returns a dict: `values` ([L] int32 ids or [L, Dt] float16 features),
    `token_start`, `token_end` ([L] int32 character offsets into the manifest text).
    """

    def __init__(self, folder: str | os.PathLike, field: str):
        folder = Path(folder)
        self.folder = folder.parent if folder.is_file() else folder
        self.info = read_verified(self.folder, STAGE)
        self.field = field
        files = shard_paths(self.folder, field)
        if not files:
            raise InputError(f"no {field}-*.arrow shards", file=str(self.folder),
                             hint="pass the output folder of 'mrhp-prep embed-text'")
        self._parts = ArrowParts(files, _RERUN)
        batches = self._parts.open()
        names = set(batches[0].schema.names) if batches else set()
        self.mode = self.info.get("mode") or ("features" if "features" in names else "static")
        self.value_column = "features" if self.mode == "features" else "token_ids"
        for needed in ("id", "token_start", "token_end", self.value_column):
            if batches and needed not in names:
                raise InputError(f"column '{needed}' is missing", file=str(files[0]),
                                 field=needed, hint=_RERUN)
        self.dim = int(self.info.get("dim") or self._infer_dim(batches))
        self.vocab: list[str] | None = None
        self.vectors: np.ndarray | None = None
        if self.mode == "static":
            self.vocab = self._read_vocab()
            vectors = self.folder / vectors_name(field)
            if not vectors.is_file():
                raise InputError(f"{vectors.name} is missing", file=str(self.folder),
                                 hint="static mode writes vocab-*.txt and vectors-*.npy; "
                                      + _RERUN)
            self.vectors = load_vectors(vectors)
            self.dim = int(self.vectors.shape[1])
        self._views = None

    def _infer_dim(self, batches) -> int:
        if self.mode == "features" and batches:
            return int(batches[0].schema.field("features").type.value_type.list_size)
        return 0

    def _read_vocab(self) -> list[str]:
        path = self.folder / vocab_name(self.field)
        if not path.is_file():
            raise InputError(f"{path.name} is missing", file=str(self.folder),
                             hint="static mode writes vocab-*.txt and vectors-*.npy; " + _RERUN)
        try:
            return Vocabulary.load(path).tokens
        except ValueError as exc:
            raise InputError(f"not a vocabulary: {exc}", file=str(path), hint=_RERUN) from exc

    def locations(self) -> pd.DataFrame:
        """One row per text: id, part (record batch), row."""
        return self._parts.locations("id")

    def columns(self) -> list[tuple[np.ndarray, ...]]:
        """Per record batch: (token offsets [n+1], values [T] or [T, Dt], character-offset
        offsets [n+1], token_start [T'], token_end [T']) as flat arrays (n texts)."""
        return self._open()

    def batch(self, part: int):
        """The pyarrow RecordBatch `part` (its `id` column names the texts)."""
        return self._parts.open()[part]

    def where(self, part: int, row: int) -> tuple[str, int]:
        """(shard file, row counted from the start of that file) of a text."""
        return self._parts.file_of(part), self._parts.file_row(part, row)

    def _open(self):
        if self._views is None or self._views[0] != os.getpid():
            views = []
            for batch in self._parts.open():
                offsets, values = list_column(batch, self.value_column)
                if self.mode == "features":
                    values_flat = flat(values.flatten()).reshape(-1, self.dim)
                else:
                    values_flat = flat(values)
                starts_off, starts = list_column(batch, "token_start")
                _, ends = list_column(batch, "token_end")
                views.append((offsets, values_flat, starts_off, flat(starts), flat(ends)))
            self._views = (os.getpid(), views)
        return self._views[1]

    def item(self, part: int, row: int, limit: int | None = None) -> dict[str, np.ndarray]:
        """values, token_start, token_end of one text, cut to its first `limit` tokens. An ids
        text cut that way keeps its closing special token ([SEP], offsets -1, -1) as the last
        of the `limit`, as the tokenizer's own truncation does: the transformer trained inside
        the model always sees a text that ends the way it was pre-trained on."""
        offsets, values, char_offsets, starts, ends = self._open()[part]
        a, b = int(offsets[row]), int(offsets[row + 1])
        c, d = int(char_offsets[row]), int(char_offsets[row + 1])
        if (limit is not None and self.mode == "ids" and 1 < limit < b - a and d - c == b - a
                and starts[d - 1] == -1 and ends[d - 1] == -1):
            tokens, chars = np.r_[a:a + limit - 1, b - 1], np.r_[c:c + limit - 1, d - 1]
            return {"values": values[tokens], "token_start": starts[chars],
                    "token_end": ends[chars]}
        if limit is not None:
            b, d = min(b, a + limit), min(d, c + limit)
        return {"values": values[a:b], "token_start": starts[c:d], "token_end": ends[c:d]}

    def tokens(self, part: int, row: int) -> list[str]:
        """The token strings of one text (for re-mapping into another vocabulary)."""
        return self._parts.open()[part].column("tokens")[row].as_py()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_views"] = None
        return state
