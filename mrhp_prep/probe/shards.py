"""The probe-masks output: `probe-NNNNN.arrow` shards, their schema, writer and readers.

Each shard is an Arrow IPC stream file of `PROBE_SCHEMA`:

    review_id        string
    sentence_start   list<int32>   character offsets into the manifest's review `text`
    sentence_end     list<int32>   (end exclusive), one per sentence
    sentence_mask    list<bool>    which sentences are marked
    mention_start    list<int32>   the gold cluster's mentions in the review
    mention_end      list<int32>
    core_words       list<string>
    rule             string        coref | first-cluster | core-word | none

`read_probe_masks` gives whole tables (for people and tests); `ProbeShards` is what training
reads: a finished folder, checked against its MANIFEST.json (`verify.py`), memory-mapped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ..arrow_files import ArrowParts, flat, list_column, read_table, write_stream
from ..errors import InputError
from ..verify import read_verified

STAGE = "probe-masks"
FORMAT_VERSION = 1
_RERUN = "re-run probe-masks with --force"


def probe_schema() -> pa.Schema:
    return pa.schema([
        ("review_id", pa.string()),
        ("sentence_start", pa.list_(pa.int32())), ("sentence_end", pa.list_(pa.int32())),
        ("sentence_mask", pa.list_(pa.bool_())),
        ("mention_start", pa.list_(pa.int32())), ("mention_end", pa.list_(pa.int32())),
        ("core_words", pa.list_(pa.string())), ("rule", pa.string()),
    ])


def shard_name(index: int) -> str:
    return f"probe-{index:05d}.arrow"


def shard_paths(folder: str | Path) -> list[Path]:
    return sorted(Path(folder).glob("probe-[0-9][0-9][0-9][0-9][0-9].arrow"))


def write_shard(path: str | Path, rows: list[dict]) -> int:
    """One shard of `rows` (dicts of the schema's columns), atomically; returns its rows."""
    schema = probe_schema()
    table = pa.Table.from_pylist(rows, schema=schema)
    return write_stream(path, schema, table.to_batches())


def read_probe_masks(*folders) -> pa.Table:
    """All rows of one or more probe-masks folders (e.g. the shards of a job array) as one
    pyarrow Table."""
    tables = [read_table(path) for folder in folders for path in shard_paths(folder)]
    return pa.concat_tables(tables) if tables else probe_schema().empty_table()


class ProbeShards:
    """The probe-masks output: per review, sentence spans and which sentences are marked."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.info = read_verified(self.folder, STAGE)
        files = shard_paths(self.folder)
        if not files:
            raise InputError("no probe-*.arrow shards", file=str(self.folder),
                             hint="pass the output folder of 'mrhp-prep probe-masks'")
        self._parts = ArrowParts(files, _RERUN)
        batches = self._parts.open()
        for needed in ("review_id", "sentence_start", "sentence_end", "sentence_mask"):
            if batches and needed not in batches[0].schema.names:
                raise InputError(f"column '{needed}' is missing", file=str(files[0]),
                                 field=needed, hint=_RERUN)
        self._views = None

    def locations(self) -> pd.DataFrame:
        """One row per review: id (review_id), part (record batch), row."""
        return self._parts.locations("review_id")

    def _open(self):
        if self._views is None or self._views[0] != os.getpid():
            views = []
            for batch in self._parts.open():
                offsets, starts = list_column(batch, "sentence_start")
                _, ends = list_column(batch, "sentence_end")
                _, marks = list_column(batch, "sentence_mask")
                views.append((offsets, flat(starts), flat(ends), flat(marks).astype(bool)))
            self._views = (os.getpid(), views)
        return self._views[1]

    def marked_spans(self, part: int, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends) [k] int character offsets of the review's marked sentences."""
        offsets, starts, ends, marks = self._open()[part]
        a, b = int(offsets[row]), int(offsets[row + 1])
        keep = marks[a:b]
        return starts[a:b][keep], ends[a:b][keep]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_views"] = None
        return state
