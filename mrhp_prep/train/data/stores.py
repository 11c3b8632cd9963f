"""Read-only, memory-mapped views of the three feature stores the trainer joins by id.

- `RoiFeatures`: the extract-rois `rois.h5` (packed `features` [N, Dv] with an
  `image_id` / `offset` / `count` index). When the features dataset is stored contiguously and
  uncompressed (the extract-rois default), it is mapped with `numpy.memmap`, so a read is a
  page-cache slice; otherwise reads go through h5py.
- `TextShards`: one field ("product" or "review") of the embed-text Arrow shards, with its
  vocabulary and vectors in static mode.
- `ProbeShards`: the probe-masks Arrow shards.

Arrow shards are memory-mapped (`pyarrow.memory_map`) and read zero-copy; each store keeps only
flat numpy views of the list columns plus an (id, part, row) table that the dataset joins with
the manifest. Every store reopens itself in a new process (DataLoader workers).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ...cache import MANIFEST_NAME, read_manifest
from ...errors import InputError


def _stage_folder(path: str | os.PathLike, stage: str, file_name: str | None = None) -> tuple[Path, dict]:
    """The finished stage folder behind `path` (a folder, or a file inside one) and its manifest."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    if not (folder / MANIFEST_NAME).exists() and file_name and (folder / file_name).exists():
        raise InputError(f"{folder} has no {MANIFEST_NAME}: the {stage} run did not finish",
                         file=str(folder), hint=f"run 'mrhp-prep {stage}' again (it resumes)")
    return folder, read_manifest(folder, stage=stage)


class RoiFeatures:
    """Per-image RoI features of an extract-rois output: `features(image_id)` -> [n, Dv] float16."""

    def __init__(self, path: str | os.PathLike):
        self.folder, self.info = _stage_folder(path, "extract-rois", "rois.h5")
        self.path = self.folder / "rois.h5"
        if not self.path.is_file():
            raise InputError("no rois.h5 in the extract-rois output", file=str(self.folder),
                             hint="pass the output folder of 'mrhp-prep extract-rois'")
        import h5py

        try:
            with h5py.File(self.path, "r") as handle:
                for name in ("image_id", "offset", "count", "features"):
                    if name not in handle:
                        raise InputError(f"dataset '{name}' is missing", file=str(self.path),
                                         field=name, hint="re-run extract-rois with --force")
                self.image_ids = handle["image_id"].asstr()[:].astype(object)
                self.offsets = handle["offset"][:].astype(np.int64)
                self.counts = handle["count"][:].astype(np.int64)
                features = handle["features"]
                self.feature_dim = int(features.shape[1])
                self._shape, self._dtype = tuple(features.shape), features.dtype
                contiguous = features.chunks is None and features.compression is None
                self._file_offset = features.id.get_offset() if contiguous else None
        except OSError as exc:
            raise InputError(f"cannot read the RoI store: {exc}", file=str(self.path),
                             hint="re-run extract-rois with --force") from exc
        self.index = {image_id: i for i, image_id in enumerate(self.image_ids)}
        self._pid = None
        self._features = None

    @property
    def memory_mapped(self) -> bool:
        return self._file_offset is not None

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.index

    def _open(self):
        if self._pid != os.getpid():
            if self._file_offset is not None:
                self._features = np.memmap(self.path, mode="r", dtype=self._dtype,
                                           offset=self._file_offset, shape=self._shape)
            else:
                import h5py

                self._features = h5py.File(self.path, "r")["features"]
            self._pid = os.getpid()
        return self._features

    def features(self, image_id: str, limit: int | None = None) -> np.ndarray:
        """[min(count, limit), Dv] RoI features of one image, in the store's box order."""
        i = self.index[image_id]
        start, count = int(self.offsets[i]), int(self.counts[i])
        if limit is not None:
            count = min(count, limit)
        return np.asarray(self._open()[start:start + count])

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_features"], state["_pid"] = None, None
        return state


class _ArrowParts:
    """Record batches of memory-mapped Arrow IPC files (file or stream format)."""

    def __init__(self, files: list[Path]):
        self.files = files
        self.batches: list[pa.RecordBatch] = []
        self._pid = None

    def open(self) -> list[pa.RecordBatch]:
        if self._pid != os.getpid():
            batches, files = [], []
            for path in self.files:
                try:
                    source = pa.memory_map(str(path), "r")
                    try:
                        reader = pa.ipc.open_file(source)
                        found = [reader.get_batch(i) for i in range(reader.num_record_batches)]
                    except pa.ArrowInvalid:
                        source = pa.memory_map(str(path), "r")
                        found = list(pa.ipc.open_stream(source))
                except (OSError, pa.ArrowException) as exc:
                    raise InputError(f"cannot read the Arrow shard: {exc}", file=str(path),
                                     hint="re-run the stage that wrote it with --force") from exc
                found = [b for b in found if b.num_rows]
                batches.extend(found)
                files.extend([path] * len(found))
            self.batches, self._batch_files = batches, files
            self._pid = os.getpid()
        return self.batches

    def file_of(self, part: int) -> str:
        """The shard file holding record batch `part` (for error messages)."""
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


def _list_column(batch: pa.RecordBatch, name: str) -> tuple[np.ndarray, pa.Array]:
    """(offsets [rows + 1] int64, the child values array) of a list column, zero-copy."""
    column = batch.column(name)
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.offsets.to_numpy().astype(np.int64, copy=False), column.values


def _flat(values: pa.Array) -> np.ndarray:
    return values.to_numpy(zero_copy_only=False)


class TextShards:
    """One field of an embed-text output: tokens, character offsets, ids or frozen features.

    `mode` is "static" (ids into `vectors`), "ids" (transformer ids) or "features".
    `item(part, row)` returns a dict: `values` ([L] int32 ids or [L, Dt] float16 features),
    `token_start`, `token_end` ([L] int32 character offsets into the manifest text).
    """

    def __init__(self, folder: str | os.PathLike, field: str):
        self.folder, self.info = _stage_folder(folder, "embed-text")
        self.field = field
        files = sorted(self.folder.glob(f"{field}-*.arrow"))
        if not files:
            raise InputError(f"no {field}-*.arrow shards", file=str(self.folder),
                             hint="pass the output folder of 'mrhp-prep embed-text'")
        self._parts = _ArrowParts(files)
        batches = self._parts.open()
        names = set(batches[0].schema.names) if batches else set()
        self.mode = self.info.get("mode") or ("features" if "features" in names else "static")
        self.value_column = "features" if self.mode == "features" else "token_ids"
        for needed in ("id", "token_start", "token_end", self.value_column):
            if batches and needed not in names:
                raise InputError(f"column '{needed}' is missing", file=str(files[0]),
                                 field=needed, hint="re-run embed-text with --force")
        self.dim = int(self.info.get("dim") or self._infer_dim(batches))
        self.vocab: list[str] | None = None
        self.vectors: np.ndarray | None = None
        if self.mode == "static":
            self.vocab = self._read_vocab()
            vectors = self.folder / f"vectors-{field}.npy"
            if not vectors.is_file():
                raise InputError(f"vectors-{field}.npy is missing", file=str(self.folder),
                                 hint="static mode writes vocab-*.txt and vectors-*.npy; re-run "
                                      "embed-text with --force")
            self.vectors = np.load(vectors, mmap_mode="r")
            self.dim = int(self.vectors.shape[1])
        self._views = None

    def _infer_dim(self, batches) -> int:
        if self.mode == "features" and batches:
            return int(batches[0].schema.field("features").type.value_type.list_size)
        return 0

    def _read_vocab(self) -> list[str]:
        path = self.folder / f"vocab-{self.field}.txt"
        if not path.is_file():
            raise InputError(f"vocab-{self.field}.txt is missing", file=str(self.folder),
                             hint="static mode writes vocab-*.txt and vectors-*.npy; re-run "
                                  "embed-text with --force")
        return path.read_text(encoding="utf-8").split("\n")[:-1] if path.stat().st_size else []

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
                offsets, values = _list_column(batch, self.value_column)
                if self.mode == "features":
                    flat = _flat(values.flatten()).reshape(-1, self.dim)
                else:
                    flat = _flat(values)
                starts_off, starts = _list_column(batch, "token_start")
                _, ends = _list_column(batch, "token_end")
                views.append((offsets, flat, starts_off, _flat(starts), _flat(ends)))
            self._views = (os.getpid(), views)
        return self._views[1]

    def item(self, part: int, row: int, limit: int | None = None) -> dict[str, np.ndarray]:
        """values, token_start, token_end of one text, cut to its first `limit` tokens. An ids
        text cut that way keeps its closing special token ([SEP], offsets -1, -1) as the last
        of the `limit`, as the tokenizer's own truncation does: the transformer trained inside
        the model always sees a text that ends the way it was pre-trained on."""
        offsets, flat, char_offsets, starts, ends = self._open()[part]
        a, b = int(offsets[row]), int(offsets[row + 1])
        c, d = int(char_offsets[row]), int(char_offsets[row + 1])
        if (limit is not None and self.mode == "ids" and 1 < limit < b - a and d - c == b - a
                and starts[d - 1] == -1 and ends[d - 1] == -1):
            tokens, chars = np.r_[a:a + limit - 1, b - 1], np.r_[c:c + limit - 1, d - 1]
            return {"values": flat[tokens], "token_start": starts[chars], "token_end": ends[chars]}
        if limit is not None:
            b, d = min(b, a + limit), min(d, c + limit)
        return {"values": flat[a:b], "token_start": starts[c:d], "token_end": ends[c:d]}

    def tokens(self, part: int, row: int) -> list[str]:
        """The token strings of one text (for re-mapping into another vocabulary)."""
        return self._parts.open()[part].column("tokens")[row].as_py()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_views"] = None
        return state


class ProbeShards:
    """The probe-masks output: per review, sentence spans and which sentences are marked."""

    def __init__(self, folder: str | os.PathLike):
        self.folder, self.info = _stage_folder(folder, "probe-masks")
        files = sorted(self.folder.glob("probe-*.arrow"))
        if not files:
            raise InputError("no probe-*.arrow shards", file=str(self.folder),
                             hint="pass the output folder of 'mrhp-prep probe-masks'")
        self._parts = _ArrowParts(files)
        batches = self._parts.open()
        for needed in ("review_id", "sentence_start", "sentence_end", "sentence_mask"):
            if batches and needed not in batches[0].schema.names:
                raise InputError(f"column '{needed}' is missing", file=str(files[0]),
                                 field=needed, hint="re-run probe-masks with --force")
        self._views = None

    def locations(self) -> pd.DataFrame:
        """One row per review: id (review_id), part (record batch), row."""
        return self._parts.locations("review_id")

    def _open(self):
        if self._views is None or self._views[0] != os.getpid():
            views = []
            for batch in self._parts.open():
                offsets, starts = _list_column(batch, "sentence_start")
                _, ends = _list_column(batch, "sentence_end")
                _, marks = _list_column(batch, "sentence_mask")
                views.append((offsets, _flat(starts), _flat(ends), _flat(marks).astype(bool)))
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


def token_probe_mask(token_start: np.ndarray, token_end: np.ndarray, span_starts: np.ndarray,
                     span_ends: np.ndarray) -> np.ndarray:
    """[L] float32: 1 where a token overlaps a marked sentence [start, end), else 0.

    Tokens without characters (special tokens with start == end) are never marked.
    """
    if len(span_starts) == 0 or len(token_start) == 0:
        return np.zeros(len(token_start), dtype=np.float32)
    ts, te = token_start[:, None], token_end[:, None]
    overlap = (ts < span_ends[None, :]) & (te > span_starts[None, :]) & (te > ts)
    return overlap.any(axis=1).astype(np.float32)

