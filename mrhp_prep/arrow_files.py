"""Arrow IPC files as the stages use them: written atomically as streams, read memory-mapped.

The formats themselves (file names, schemas, versions) belong to their module:
`text/shards.py` (embed-text shards), `probe/shards.py` (probe-masks shards) and
`text/vector_cache.py` (the word list of a vectors cache). They write and read through these
functions, so an Arrow file is opened in one place.

Readers accept both IPC layouts, the stream (what the stages write, and what
`datasets.Dataset.from_file` reads) and the file layout (random access), so shards written by
other tools load too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from .atomic import atomic_path
from .errors import InputError


def write_stream(path: str | Path, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
    """Stream record batches into `path` atomically (a reader never sees half a file);
    returns the number of rows."""
    rows = 0
    with atomic_path(path) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
    return rows


def _open_ipc(path: str | Path):
    """A reader of one IPC file, either layout, over one memory map of it: the file layout's
    reader (random access) or, when the file is a stream, the stream's."""
    source = pa.memory_map(str(path), "r")
    try:
        try:
            return pa.ipc.open_file(source)
        except pa.ArrowInvalid:
            source.seek(0)
            return pa.ipc.open_stream(source)
    except BaseException:
        source.close()
        raise


def read_batches(path: str | Path) -> list[pa.RecordBatch]:
    """The record batches of one IPC file (stream or file layout), memory-mapped: the
    column buffers are pages of the file, not copies."""
    reader = _open_ipc(path)
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        return [reader.get_batch(i) for i in range(reader.num_record_batches)]
    return list(reader)


def read_table(path: str | Path) -> pa.Table:
    """One IPC file (stream or file layout) as a memory-mapped table."""
    return _open_ipc(path).read_all()


class ArrowParts:
    """The non-empty record batches of several IPC files, memory-mapped once per process
    (a DataLoader worker maps its own). A damaged file is an InputError naming it."""

    def __init__(self, files: Sequence[Path], rerun_hint: str):
        self.files = list(files)
        self.rerun_hint = rerun_hint
        self.batches: list[pa.RecordBatch] = []
        self._batch_files: list[Path] = []
        self._pid = None

    def open(self) -> list[pa.RecordBatch]:
        if self._pid != os.getpid():
            batches, files = [], []
            for path in self.files:
                try:
                    found = [b for b in read_batches(path) if b.num_rows]
                except (OSError, pa.ArrowException) as exc:
                    raise InputError(f"cannot read the Arrow shard: {exc}", file=str(path),
                                     hint=self.rerun_hint) from exc
                batches.extend(found)
                files.extend([path] * len(found))
            self.batches, self._batch_files = batches, files
            self._pid = os.getpid()
        return self.batches

    def file_of(self, part: int) -> str:
        """The file holding record batch `part` (for error messages)."""
        self.open()
        return str(self._batch_files[part])

    def file_row(self, part: int, row: int) -> int:
        """Row `row` of record batch `part` counted from the start of its file."""
        self.open()
        file = self._batch_files[part]
        return row + sum(b.num_rows for b, f in zip(self.batches[:part], self._batch_files)
                         if f == file)

    def locations(self, id_column: str) -> pd.DataFrame:
        """Where each record lives: id (from `id_column`), part (record batch), row."""
        frames = [pd.DataFrame({"id": batch.column(id_column).to_numpy(zero_copy_only=False)
                                .astype(object),
                                "part": part, "row": np.arange(batch.num_rows)})
                  for part, batch in enumerate(self.open())]
        if not frames:
            return pd.DataFrame({"id": pd.Series(dtype=object), "part": pd.Series(dtype=np.int64),
                                 "row": pd.Series(dtype=np.int64)})
        return pd.concat(frames, ignore_index=True)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["batches"], state["_batch_files"], state["_pid"] = [], [], None
        return state


def list_column(batch: pa.RecordBatch, name: str) -> tuple[np.ndarray, pa.Array]:
    """(offsets [rows + 1] int64, the child values array) of a list column, zero-copy."""
    column = batch.column(name)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.offsets.to_numpy().astype(np.int64, copy=False), column.values


def flat(values: pa.Array) -> np.ndarray:
    """A primitive Arrow array as numpy (zero-copy where Arrow allows)."""
    return values.to_numpy(zero_copy_only=False)
