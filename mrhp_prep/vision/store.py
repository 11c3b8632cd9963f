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

`features` is written in one uncompressed block (HDF5's contiguous layout), so a reader maps it
with `numpy.memmap` (`RoiStore` does); the small per-region arrays are chunked. Stores written
before this layout (format 2 as well) hold `features` in chunks of 64 rows: they read the
same, through h5py, more slowly; `merge-rois FOLDER` copies one into the block layout.
A merged store (`merge-rois --virtual`) holds HDF5 virtual datasets over the shards' files.

Part files (`parts/part-*.h5`, see `parts.py`) have the same layout plus a `failures` dataset
(JSON lines). This module reads the files and `store_write.py` writes them; no other module
opens them (`store_join.py` lays stores end to end through `store_write.created_store`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import h5py
import numpy as np

from ..errors import InputError

# 2: object and attribute ids counted from 0 (as the reference extractor and the vocabulary
#    files count them); format 1 stores counted extract-rois ids from 1.
FORMAT_VERSION = 2
STORE_NAME = "rois.h5"

INDEX_FIELDS = ("image_id", "offset", "count", "image_h", "image_w")
ROW_FIELDS = ("features", "boxes", "object_id", "object_conf", "attr_id", "attr_conf")
# The stages whose output folder holds a rois.h5 (all read alike).
ROI_STAGES = ("extract-rois", "merge-rois", "import-rois")
# In a virtual merge's MANIFEST.json: each shard file it reads, named as the store names it
# (relative to the merge's folder), -> its record (size, SHA-256) when the merge read it
SOURCES_KEY = "source_files"


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


class RoiStore:
    """Read-only access to a `rois.h5` (or a part or a merged store).

    >>> store = RoiStore("cache/sample/extract-rois/<fp>/rois.h5")
    >>> store.features("B00SAMP001/pic_0.jpg").shape      # (n, 2048)
    >>> store.image("B00SAMP001/pic_0.jpg")["boxes"]     # (n, 4) float32, original pixels

    `features` stored in one uncompressed block (what this version writes) are read through a
    `numpy.memmap` of the file: a read is a slice of the page cache, several times faster per
    image than HDF5's chunk reads (docs/extract-rois.md). A virtual store (`merge-rois
    --virtual`) maps each shard file's block the same way. Chunked stores (written before
    that) read through h5py. The store reopens itself in a new process (DataLoader workers).
    Stage outputs are opened with `RoiStore.of_stage`, which checks them first.
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        if path.is_dir():
            path = path / STORE_NAME
        if not path.is_file():
            raise InputError("no RoI store here", file=str(path),
                             hint="pass an extract-rois (or merge-rois) output folder or rois.h5")
        self.path = path
        self.folder, self.info = path.parent, None
        self._pid = None
        handle = self._open()
        try:
            self._read_index(handle)
        except BaseException:
            self.close()
            raise
        self._maps = None

    def _read_index(self, handle: h5py.File) -> None:
        path = self.path
        missing = [n for n in INDEX_FIELDS + ROW_FIELDS if n not in handle]
        if missing:
            raise InputError(f"not an RoI store: missing {', '.join(missing)}", file=str(path),
                             hint="re-run the stage that wrote it with --force")
        if self.format_version > FORMAT_VERSION:
            raise InputError(f"store format {self.format_version} is newer than this mrhp-prep "
                             f"reads ({FORMAT_VERSION})", file=str(path), hint="upgrade mrhp-prep")
        self._ids = list(handle["image_id"].asstr()[...])
        self.offsets = handle["offset"][...].astype(np.int64)
        self.counts = handle["count"][...].astype(np.int64)
        self._height = handle["image_h"][...]
        self._width = handle["image_w"][...]
        self.index = {image_id: row for row, image_id in enumerate(self._ids)}
        if len(self.index) != len(self._ids):
            raise InputError("the store lists an image id twice", file=str(path))
        features = handle["features"]
        self._shape, self._dtype = tuple(features.shape), features.dtype
        self._blocks = self._feature_blocks(features)

    @classmethod
    def of_stage(cls, path: str | os.PathLike) -> "RoiStore":
        """The store of a finished extract-rois, merge-rois or import-rois folder (or of its
        rois.h5), its files checked against the MANIFEST.json records (`verify.py`); the
        shard files behind a virtual store are checked against the records merge-rois kept
        of them (so a shard written again since the merge is refused)."""
        from ..verify import FILES_KEY, read_verified, verify_files

        path = Path(path)
        folder = path.parent if path.is_file() else path
        info = read_verified(folder, ROI_STAGES)
        store = cls(folder / STORE_NAME)
        store.info = info
        try:
            sources = {(file, stored) for _, _, file, _, stored in store._virtual_sources()}
            recorded = info.get(SOURCES_KEY) or {}
            for source, stored in sorted(sources):
                record = recorded.get(stored)
                if record is not None:
                    verify_files(source.parent, {"stage": info.get("stage"),
                                                 FILES_KEY: {source.name: record}})
                else:                   # a merge that kept no records: the shard's own
                    _verify_shard(source.parent)
        except BaseException:
            store.close()
            raise
        return store

    # --- opening, per process ---------------------------------------------------------
    def _open(self) -> h5py.File:
        if self._pid != os.getpid():
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as exc:
                raise InputError(f"cannot read the RoI store (not a readable HDF5 file): {exc}",
                                 file=str(self.path),
                                 hint="re-run the stage that wrote it with --force") from exc
            self._pid, self._maps = os.getpid(), None
            self._h5_features = None
        return self._file

    def _virtual_sources(self) -> list[tuple[int, int, Path, str, str]]:
        """(first row, end row, file, dataset, the file's name as stored) of each source of a
        virtual `features`."""
        features = self._open()["features"]
        if not features.is_virtual:
            return []
        plist = features.id.get_create_plist()
        sources = []
        for k in range(plist.get_virtual_count()):
            (start, _), (last, _) = plist.get_virtual_vspace(k).get_select_bounds()
            name = plist.get_virtual_filename(k)
            file = self.path if name == "." else Path(name)
            if not file.is_absolute():
                file = Path(os.path.normpath(self.path.parent / file))
            sources.append((int(start), int(last) + 1, file, plist.get_virtual_dsetname(k),
                            name))
        return sources

    def _feature_blocks(self, features) -> list[tuple[int, int, Path, int]] | None:
        """(first row, end row, file, byte offset) of contiguous blocks covering `features`,
        or None when some part of it is chunked (then h5py reads it)."""
        if not features.is_virtual:
            offset = _contiguous_offset(features)
            if offset is None:
                return None if self._shape[0] else []
            return [(0, self._shape[0], self.path, offset)]
        blocks = []
        for start, stop, file, name, _ in self._virtual_sources():
            if not file.is_file():
                raise InputError(
                    f"{self.path.name} reads its regions from {file}, which is missing (the "
                    f"shard folders moved or were deleted after merge-rois --virtual)",
                    file=str(file), hint="put the shard folders back where they were (the "
                    "merge-rois MANIFEST.json lists them), or run merge-rois again without "
                    "--virtual, which copies the regions into one file")
            with h5py.File(file, "r") as source:
                offset = _contiguous_offset(source[name])
            if offset is None:
                return None
            blocks.append((start, stop, file, offset))
        return blocks

    @property
    def memory_mapped(self) -> bool:
        """Whether `features` reads go through numpy memory maps instead of h5py."""
        return self._blocks is not None

    def _mapped(self) -> list[tuple[int, int, np.ndarray]]:
        self._open()
        if self._maps is None:
            self._maps = [(start, stop, np.memmap(file, mode="r", dtype=self._dtype,
                                                  offset=offset,
                                                  shape=(stop - start, *self._shape[1:])))
                          for start, stop, file, offset in self._blocks]
        return self._maps

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_file", None)
        state["_pid"], state["_maps"], state["_h5_features"] = None, None, None
        return state

    # --- metadata -----------------------------------------------------------------------
    @property
    def image_ids(self) -> list[str]:
        return list(self._ids)

    @property
    def format_version(self) -> int:
        return int(self._open().attrs.get("format_version", 0))

    @property
    def feature_dim(self) -> int:
        return int(self._shape[1])

    @property
    def num_regions(self) -> int:
        return int(self._shape[0])

    @property
    def attrs(self) -> dict:
        out = {}
        for key, value in self._open().attrs.items():
            if isinstance(value, bytes):
                value = value.decode()
            if key == "settings" and isinstance(value, str):
                value = json.loads(value)
            out[key] = value.item() if isinstance(value, np.generic) else value
        return out

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.index

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    # --- data ---------------------------------------------------------------------------
    def span(self, image_id: str) -> slice:
        """The region rows of one image."""
        return self._span(image_id)[1]

    def _span(self, image_id: str) -> tuple[int, slice]:
        try:
            row = self.index[image_id]
        except KeyError:
            raise KeyError(f"image {image_id!r} is not in {self.path}") from None
        start = int(self.offsets[row])
        return row, slice(start, start + int(self.counts[row]))

    def features(self, image_id: str, limit: int | None = None) -> np.ndarray:
        """[n, D] features of one image (float16 or float32 as stored), its first `limit`
        regions (stored order) when given."""
        span = self._span(image_id)[1]
        start, stop = span.start, span.stop if limit is None else min(span.stop,
                                                                        span.start + limit)
        if self._blocks is not None:
            for first, end, block in self._mapped():
                if first <= start and stop <= end:
                    return np.asarray(block[start - first:stop - first])
            if start == stop:
                return np.zeros((0, *self._shape[1:]), self._dtype)
        self._open()
        if self._h5_features is None:            # looked up once: a lookup costs a read
            self._h5_features = self._file["features"]
        return self._h5_features[start:stop]

    def image(self, image_id: str) -> dict[str, np.ndarray | int]:
        """All arrays of one image: features [n, D], boxes [n, 4], object_id, object_conf,
        attr_id, attr_conf [n], and image_h, image_w."""
        row, span = self._span(image_id)
        out: dict = {name: self._open()[name][span] for name in ROW_FIELDS if name != "features"}
        out["features"] = self.features(image_id)
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
            if image_id not in self.index and skip_missing:
                continue
            parts.append(self.features(image_id, max_per_image))
        if not parts:
            return np.zeros((0, self.feature_dim), dtype=self._dtype)
        return np.concatenate(parts)

    def index_rows(self) -> Iterator[tuple[str, int, int, int, int]]:
        """(image_id, offset, count, image_h, image_w) for every image, in file order."""
        for row, image_id in enumerate(self._ids):
            yield (image_id, int(self.offsets[row]), int(self.counts[row]),
                   int(self._height[row]), int(self._width[row]))

    def failures(self) -> list[dict]:
        handle = self._open()
        if "failures" not in handle:
            return []
        return [json.loads(line) for line in handle["failures"].asstr()[...]]

    def row_layout(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """(shape, dtype) of one row dataset."""
        dataset = self._open()[name]
        return tuple(dataset.shape), dataset.dtype

    def rows(self, name: str, span: slice) -> np.ndarray:
        if name == "features" and self._blocks is not None and len(self._blocks) == 1:
            return np.array(self._mapped()[0][2][span])
        return self._open()[name][span]

    def close(self) -> None:
        if self._pid == os.getpid():
            self._file.close()
        self._pid, self._maps = None, None

    def __enter__(self) -> "RoiStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _verify_shard(folder: Path) -> None:
    """A virtual merge written before merges recorded their shards: each shard folder is
    checked against its own MANIFEST.json (when it has one)."""
    from ..cache import MANIFEST_NAME
    from ..verify import read_verified

    if (folder / MANIFEST_NAME).is_file():
        read_verified(folder, "extract-rois")


def _contiguous_offset(dataset) -> int | None:
    """Byte offset of a dataset stored as one uncompressed block in its file, else None."""
    if dataset.is_virtual or dataset.chunks is not None or dataset.external:
        return None
    return dataset.id.get_offset()
