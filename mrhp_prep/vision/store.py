"""The RoI store: every region of every image in a few packed HDF5 arrays plus an index.

`rois.h5` layout (readable with plain h5py):

    image_id     [M]     utf-8 string     one row per image, in the order written
    offset       [M]     int64            first region row of the image
    count        [M]     int32            number of regions of the image
    image_h      [M]     int32            original height in pixels
    image_w      [M]     int32            original width in pixels
    features     [N, D]  float16/float32  region features (D = 2048 for the BUTD model)
    boxes        [N, 4]  float32          x1, y1, x2, y2 in original-image pixels
    object_id    [N]     int32            arg-max object class, from 0 (Visual Genome: 0..1599,
                                          the line of objects_vocab.txt)
    object_conf  [N]     float32          its probability
    attr_id      [N]     int32            arg-max attribute, from 0 (Visual Genome: 0..399;
                                          -1: the model has no attribute head)
    attr_conf    [N]     float32          its probability

File attributes: `model`, `weights_sha256`, `settings` (JSON), `format_version`,
`feature_dim`. Image i's regions are rows offset[i] : offset[i] + count[i].

Part files (`parts/part-*.h5`) have the same layout plus a `failures` dataset (JSON lines);
an extraction run writes one per chunk of images, atomically, so a killed run loses at most
the chunk in flight and resumes from the parts on disk.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import h5py
import numpy as np

from ..atomic import atomic_path
from ..errors import InputError
from ..faults import require_free_space

# 2: object and attribute ids counted from 0 (as the reference extractor and the vocabulary
#    files count them); format 1 stores counted extract-rois ids from 1.
FORMAT_VERSION = 2
STORE_NAME = "rois.h5"
PARTS_DIR = "parts"

INDEX_FIELDS = ("image_id", "offset", "count", "image_h", "image_w")
ROW_FIELDS = ("features", "boxes", "object_id", "object_conf", "attr_id", "attr_conf")
_ROW_DTYPES = {"boxes": np.float32, "object_id": np.int32, "object_conf": np.float32,
               "attr_id": np.int32, "attr_conf": np.float32}
_STR = h5py.string_dtype("utf-8")
# Rows per chunk: one image's regions (10-100) touch one or two chunks of features.
_FEATURE_CHUNK_ROWS = 64
_SMALL_CHUNK_ROWS = 4096
_PACKING_MARGIN = 8 << 20       # bytes beyond the parts' size that packing may need


@dataclass
class ImageRegions:
    """The regions of one image. Arrays are [n, ...] with n = number of regions."""

    image_id: str
    image_h: int
    image_w: int
    features: np.ndarray
    boxes: np.ndarray
    object_id: np.ndarray
    object_conf: np.ndarray
    attr_id: np.ndarray
    attr_conf: np.ndarray

    @property
    def count(self) -> int:
        return int(self.features.shape[0])


def _create_rows(handle: h5py.File, total: int, feature_dim: int, feature_dtype) -> dict:
    def chunks(rows: int, *tail: int) -> tuple | None:
        return (max(1, min(rows, max(total, 1))), *tail) if total else None

    datasets = {"features": handle.create_dataset(
        "features", (total, feature_dim), dtype=feature_dtype,
        chunks=chunks(_FEATURE_CHUNK_ROWS, feature_dim))}
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


def write_store(path: str | Path, images: Sequence[ImageRegions], *, feature_dim: int,
                feature_dtype=np.float16, attrs: dict | None = None,
                failures: Sequence[dict] = ()) -> Path:
    """Write `images` (and, for part files, `failures`) to `path` atomically."""
    path = Path(path)
    counts = [image.count for image in images]
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts else []
    total = int(sum(counts))
    with _built_in_memory(path) as handle:
        _write_index(handle, [i.image_id for i in images], offsets, counts,
                     [i.image_h for i in images], [i.image_w for i in images])
        rows = _create_rows(handle, total, feature_dim, feature_dtype)
        if total:
            for name in ROW_FIELDS:
                data = np.concatenate([getattr(i, name) for i in images if i.count])
                rows[name][...] = data.astype(rows[name].dtype, copy=False)
        handle.create_dataset("failures", data=np.asarray(
            [json.dumps(f, default=str) for f in failures], dtype=object), dtype=_STR)
        _set_attrs(handle, attrs or {}, feature_dim)
    return path


# HDF5 does not survive a write the disk refuses: its file object is left half closed, and
# freeing it crashes the process (a segfault). Small files (parts, the merged index) are
# therefore built in memory and written to disk by Python, where a full disk is a plain
# OSError; the one large file, the packed store, is written only when the disk has room.
@contextlib.contextmanager
def _built_in_memory(path: Path) -> Iterator[h5py.File]:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        yield handle
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


class RoiStore:
    """Read-only access to a `rois.h5` (or a part or a merged store).

    >>> store = RoiStore("cache/sample/extract-rois/<fp>/rois.h5")
    >>> store.features("B00SAMP001/pic_0.jpg").shape      # (n, 2048)
    >>> store.image("B00SAMP001/pic_0.jpg")["boxes"]     # (n, 4) float32, original pixels
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        if path.is_dir():
            path = path / STORE_NAME
        if not path.is_file():
            raise InputError("no RoI store here", file=str(path),
                             hint="pass an extract-rois (or merge-rois) output folder or rois.h5")
        self.path = path
        try:
            self._file = h5py.File(path, "r")
        except OSError as exc:
            raise InputError(f"not a readable HDF5 file: {exc}", file=str(path)) from exc
        missing = [n for n in INDEX_FIELDS + ROW_FIELDS if n not in self._file]
        if missing:
            raise InputError(f"not an RoI store: missing {', '.join(missing)}", file=str(path))
        version = int(self._file.attrs.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise InputError(f"store format {version} is newer than this mrhp-prep reads "
                             f"({FORMAT_VERSION})", file=str(path), hint="upgrade mrhp-prep")
        ids = self._file["image_id"].asstr()[...]
        self._ids = list(ids)
        self._offset = self._file["offset"][...]
        self._count = self._file["count"][...]
        self._height = self._file["image_h"][...]
        self._width = self._file["image_w"][...]
        self._row_of = {image_id: row for row, image_id in enumerate(self._ids)}
        if len(self._row_of) != len(self._ids):
            raise InputError("the store lists an image id twice", file=str(path))

    # --- metadata -----------------------------------------------------------------------
    @property
    def image_ids(self) -> list[str]:
        return list(self._ids)

    @property
    def format_version(self) -> int:
        return int(self._file.attrs.get("format_version", 0))

    @property
    def feature_dim(self) -> int:
        return int(self._file["features"].shape[1])

    @property
    def num_regions(self) -> int:
        return int(self._file["features"].shape[0])

    @property
    def attrs(self) -> dict:
        out = {}
        for key, value in self._file.attrs.items():
            if isinstance(value, bytes):
                value = value.decode()
            if key == "settings" and isinstance(value, str):
                value = json.loads(value)
            out[key] = value.item() if isinstance(value, np.generic) else value
        return out

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._row_of

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    # --- data ---------------------------------------------------------------------------
    def _span(self, image_id: str) -> tuple[int, slice]:
        try:
            row = self._row_of[image_id]
        except KeyError:
            raise KeyError(f"image {image_id!r} is not in {self.path}") from None
        start = int(self._offset[row])
        return row, slice(start, start + int(self._count[row]))

    def features(self, image_id: str) -> np.ndarray:
        """[n, D] features of one image (float16 or float32 as stored)."""
        return self._file["features"][self._span(image_id)[1]]

    def image(self, image_id: str) -> dict[str, np.ndarray | int]:
        """All arrays of one image: features [n, D], boxes [n, 4], object_id, object_conf,
        attr_id, attr_conf [n], and image_h, image_w."""
        row, span = self._span(image_id)
        out: dict = {name: self._file[name][span] for name in ROW_FIELDS}
        out["image_h"] = int(self._height[row])
        out["image_w"] = int(self._width[row])
        return out

    def images(self, image_ids: Iterable[str], *, max_per_image: int | None = None,
               skip_missing: bool = True) -> np.ndarray:
        """Features of several images (e.g. an item's photos) concatenated: [sum n, D].

        `max_per_image` keeps each image's first regions (stored order); images not in
        the store are skipped unless `skip_missing=False`.
        """
        parts = []
        for image_id in image_ids:
            if image_id not in self._row_of and skip_missing:
                continue
            feats = self.features(image_id)
            parts.append(feats[:max_per_image] if max_per_image else feats)
        if not parts:
            return np.zeros((0, self.feature_dim), dtype=self._file["features"].dtype)
        return np.concatenate(parts)

    def index_rows(self) -> Iterator[tuple[str, int, int, int, int]]:
        """(image_id, offset, count, image_h, image_w) for every image, in file order."""
        for row, image_id in enumerate(self._ids):
            yield (image_id, int(self._offset[row]), int(self._count[row]),
                   int(self._height[row]), int(self._width[row]))

    def failures(self) -> list[dict]:
        if "failures" not in self._file:
            return []
        return [json.loads(line) for line in self._file["failures"].asstr()[...]]

    def rows(self, name: str, span: slice) -> np.ndarray:
        return self._file[name][span]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "RoiStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- parts: resume and consolidation ------------------------------------------------------

def list_parts(folder: str | Path) -> list[Path]:
    parts = Path(folder) / PARTS_DIR
    return sorted(parts.glob("part-*.h5")) if parts.is_dir() else []


def next_part_path(folder: str | Path) -> Path:
    existing = list_parts(folder)
    number = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
    return Path(folder) / PARTS_DIR / f"part-{number:05d}.h5"


def _joined_index(stores: Sequence["RoiStore"], kind: str, hint: str | None = None):
    """The index of `stores` laid end to end: (image_ids, offsets, counts, heights, widths),
    offsets shifted by the regions of the stores before. Raises InputError when an image id
    is in two of them."""
    ids, offsets, counts, heights, widths = [], [], [], [], []
    seen: dict[str, Path] = {}
    base = 0
    for store in stores:
        for image_id, offset, count, height, width in store.index_rows():
            if image_id in seen:
                raise InputError(f"image {image_id!r} is in two {kind} ({seen[image_id]} and "
                                 f"{store.path})", file=str(store.path), hint=hint)
            seen[image_id] = store.path
            ids.append(image_id)
            offsets.append(base + offset)
            counts.append(count)
            heights.append(height)
            widths.append(width)
        base += store.num_regions
    return ids, offsets, counts, heights, widths


def consolidate(sources: Sequence[str | Path], out_path: str | Path, *, attrs: dict,
                feature_dim: int, feature_dtype=np.float16) -> tuple[int, int]:
    """Copy the regions of several stores (parts) into one packed store, atomically.

    Returns (number of images, number of regions). Raises if an image id repeats.
    """
    stores = [RoiStore(s) for s in sources]
    try:
        for store in stores:
            if store.feature_dim != feature_dim:
                raise InputError(f"feature size {store.feature_dim}, expected {feature_dim}",
                                 file=str(store.path))
        index = _joined_index(stores, "part files",
                              hint="two runs wrote into this folder at once; rerun with --force "
                                   "to start it over")
        total = sum(s.num_regions for s in stores)
        # The copy is about as large as the parts (plus HDF5's own bookkeeping).
        require_free_space(Path(out_path).parent, _PACKING_MARGIN + sum(
            store.path.stat().st_size for store in stores), f"packing {Path(out_path).name}")
        with atomic_path(out_path) as tmp:
            with h5py.File(tmp, "w") as handle:
                rows = _create_rows(handle, total, feature_dim, feature_dtype)
                base = 0
                for store in stores:
                    n = store.num_regions
                    if n:
                        for name in ROW_FIELDS:
                            block = store.rows(name, slice(0, n))
                            rows[name][base:base + n] = block.astype(rows[name].dtype, copy=False)
                    base += n
                _write_index(handle, *index)
                _set_attrs(handle, attrs, feature_dim)
        return len(index[0]), total
    finally:
        for store in stores:
            store.close()


def merge_virtual(sources: Sequence[str | Path], out_path: str | Path, *, attrs: dict) -> tuple[int, int]:
    """Join stores without copying their regions: the row datasets of `out_path` are HDF5
    virtual datasets over the sources (stored as paths relative to `out_path`'s folder);
    only the small index is written. The sources must stay where they are."""
    out_path = Path(out_path)
    stores = [RoiStore(s) for s in sources]
    try:
        feature_dim = stores[0].feature_dim
        for store in stores:
            if store.feature_dim != feature_dim:
                raise InputError(f"feature size {store.feature_dim} differs from {feature_dim}",
                                 file=str(store.path), hint="merge shards of one extraction only")
        index = _joined_index(stores, "shards",
                              hint="merge shards of one extraction (same --num-shards)")
        total = sum(s.num_regions for s in stores)
        layouts = {}
        for name in ROW_FIELDS:
            sample = stores[0]._file[name]
            layouts[name] = h5py.VirtualLayout(shape=(total, *sample.shape[1:]), dtype=sample.dtype)
        base = 0
        for store in stores:
            n = store.num_regions
            relative = os.path.relpath(store.path.resolve(), out_path.resolve().parent)
            if n:
                for name in ROW_FIELDS:
                    shape = store._file[name].shape
                    layouts[name][base:base + n] = h5py.VirtualSource(relative, name, shape=shape)
            base += n
        with _built_in_memory(out_path) as handle:
            for name, layout in layouts.items():
                handle.create_virtual_dataset(name, layout, fillvalue=0)
            _write_index(handle, *index)
            _set_attrs(handle, attrs, feature_dim)
        return len(index[0]), total
    finally:
        for store in stores:
            store.close()
