"""Writing RoI stores (the layout is in `store.py`, which reads them).

`write_store` writes a small store (a part file, a test's store) from `ImageRegions` in one
go; `created_store` makes a store whose row datasets its caller fills (`create_rows`) or lays
over other files (virtual datasets: `store_join.py`). Every store is written atomically.
These two modules are the only ones that open the files of the format.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np

from ..atomic import atomic_path
from ..verify import bytes_record
from .store import FORMAT_VERSION, ROW_FIELDS, ImageRegions

_ROW_DTYPES = {"boxes": np.float32, "object_id": np.int32, "object_conf": np.float32,
               "attr_id": np.int32, "attr_conf": np.float32}
_STR = h5py.string_dtype("utf-8")
_SMALL_CHUNK_ROWS = 4096


def create_rows(handle: h5py.File, total: int, feature_dim: int, feature_dtype) -> dict:
    """The row datasets of a new store: `features` in one uncompressed block (so readers can
    memory-map it), the small per-region arrays in chunks."""
    def chunks(rows: int, *tail: int) -> tuple | None:
        return (max(1, min(rows, max(total, 1))), *tail) if total else None

    datasets = {"features": handle.create_dataset("features", (total, feature_dim),
                                                  dtype=feature_dtype)}
    datasets["boxes"] = handle.create_dataset("boxes", (total, 4), dtype=np.float32,
                                              chunks=chunks(_SMALL_CHUNK_ROWS, 4))
    for name in ("object_id", "object_conf", "attr_id", "attr_conf"):
        datasets[name] = handle.create_dataset(name, (total,), dtype=_ROW_DTYPES[name],
                                               chunks=chunks(_SMALL_CHUNK_ROWS))
    return datasets


def _write_index(handle: h5py.File, image_ids, offsets, counts, heights, widths) -> None:
    handle.create_dataset("image_id", data=np.asarray(list(image_ids), dtype=object), dtype=_STR)
    handle.create_dataset("offset", data=np.asarray(offsets, dtype=np.int64))
    handle.create_dataset("count", data=np.asarray(counts, dtype=np.int32))
    handle.create_dataset("image_h", data=np.asarray(heights, dtype=np.int32))
    handle.create_dataset("image_w", data=np.asarray(widths, dtype=np.int32))


def _set_attrs(handle: h5py.File, attrs: dict, feature_dim: int) -> None:
    handle.attrs["format_version"] = FORMAT_VERSION
    handle.attrs["feature_dim"] = feature_dim
    for key, value in attrs.items():
        handle.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)


@contextlib.contextmanager
def _in_memory(index: tuple, attrs: dict, feature_dim: int
               ) -> Iterator[tuple[h5py.File, io.BytesIO]]:
    """A store built in a memory buffer: (its file, the buffer, whole once the block ends)."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        _write_index(handle, *index)
        yield handle, buffer
        _set_attrs(handle, attrs, feature_dim)


def _write_bytes(path: Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _store_bytes(images: Sequence[ImageRegions], feature_dim: int, feature_dtype, attrs: dict,
                 failures: Sequence[dict]) -> memoryview:
    counts = [image.count for image in images]
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts else []
    total = int(sum(counts))
    index = ([i.image_id for i in images], offsets, counts, [i.image_h for i in images],
             [i.image_w for i in images])
    with _in_memory(index, attrs, feature_dim) as (handle, buffer):
        rows = create_rows(handle, total, feature_dim, feature_dtype)
        if total:
            for name in ROW_FIELDS:
                data = np.concatenate([getattr(i, name) for i in images if i.count])
                rows[name][...] = data.astype(rows[name].dtype, copy=False)
        handle.create_dataset("failures", data=np.asarray(
            [json.dumps(f, default=str) for f in failures], dtype=object), dtype=_STR)
    return buffer.getbuffer()


def write_store(path: str | Path, images: Sequence[ImageRegions], *, feature_dim: int,
                feature_dtype=np.float16, attrs: dict | None = None,
                failures: Sequence[dict] = ()) -> Path:
    """Write `images` (and, for part files, `failures`) to `path` atomically."""
    _write_bytes(Path(path), _store_bytes(images, feature_dim, feature_dtype, attrs or {},
                                          failures))
    return Path(path)


def write_recorded_store(path: str | Path, images: Sequence[ImageRegions], *,
                         feature_dim: int, feature_dtype=np.float16, attrs: dict | None = None,
                         failures: Sequence[dict] = ()) -> dict:
    """`write_store`, returning the written file's record (size and SHA-256 of the bytes
    that were written: the file is not read back)."""
    data = _store_bytes(images, feature_dim, feature_dtype, attrs or {}, failures)
    _write_bytes(Path(path), data)
    return bytes_record(data)


@contextlib.contextmanager
def created_store(path: str | Path, index: tuple, *, attrs: dict, feature_dim: int,
                  in_memory: bool = False) -> Iterator[h5py.File]:
    """A new store at `path`, written atomically (renamed into place when the block ends
    without an error): the index (image_ids, offsets, counts, heights, widths) is written,
    the block adds the row datasets (`create_rows`, or virtual ones), then the attributes.

    HDF5 does not survive a write the disk refuses: its file object is left half closed, and
    freeing it crashes the process (a segfault). Small files (parts, a virtual store's index)
    are therefore built `in_memory` and written to disk by Python, where a full disk is a
    plain OSError; a large packed store is written only when the disk has room for it
    (`require_free_space`, checked by the caller)."""
    if not in_memory:
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as handle:
                _write_index(handle, *index)
                yield handle
                _set_attrs(handle, attrs, feature_dim)
        return
    with _in_memory(index, attrs, feature_dim) as (handle, buffer):
        yield handle
    _write_bytes(Path(path), buffer.getbuffer())
