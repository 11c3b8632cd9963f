"""Stores laid end to end: part files into one store, shards into a merged one.

`consolidate` copies the regions into a new store (features in one block, readable through a
memory map); `merge_virtual` writes only the index, over HDF5 virtual datasets that read the
sources where they are. Both refuse an image id that two sources hold.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import h5py
import numpy as np

from ..errors import InputError
from ..faults import require_free_space
from .store import ROW_FIELDS, RoiStore
from .store_write import create_rows, created_store

# Regions copied at a time (~64 MB of 2048-d float16 features): memory stays small whatever
# the size of the stores.
_COPY_ROWS = 16384
_PACKING_MARGIN = 8 << 20       # bytes beyond the sources' size that packing may need


class Joined(NamedTuple):
    """What a joined store holds: images, regions, and the regions of each image."""

    images: int
    regions: int
    region_counts: list[int]


def source_name(source: str | Path, out_path: str | Path) -> str:
    """How a virtual store at `out_path` names a source file: its path relative to the
    store's folder (so the two may move together)."""
    return os.path.relpath(Path(source).resolve(), Path(out_path).resolve().parent)


@contextlib.contextmanager
def _opened(sources: Sequence[str | Path]) -> Iterator[list[RoiStore]]:
    """The stores of `sources`, each closed when the block ends (also when opening a later
    one fails)."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(RoiStore(source)) for source in sources]


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
                feature_dim: int, feature_dtype=np.float16, kind: str = "part files",
                hint: str = "two runs wrote into this folder at once; rerun with --force to "
                            "start it over") -> Joined:
    """Copy the regions of several stores (parts, shards) into one packed store, atomically,
    `features` in one block; copied in slices, so memory stays small whatever the size.

    Raises if an image id repeats.
    """
    with _opened(sources) as stores:
        for store in stores:
            if store.feature_dim != feature_dim:
                raise InputError(f"feature size {store.feature_dim}, expected {feature_dim}",
                                 file=str(store.path))
        index = _joined_index(stores, kind, hint=hint)
        total = sum(s.num_regions for s in stores)
        # The copy is about as large as its sources (plus HDF5's own bookkeeping).
        require_free_space(Path(out_path).parent, _PACKING_MARGIN + sum(
            store.path.stat().st_size for store in stores), f"packing {Path(out_path).name}")
        with created_store(out_path, index, attrs=attrs, feature_dim=feature_dim) as handle:
            rows = create_rows(handle, total, feature_dim, feature_dtype)
            base = 0
            for store in stores:
                n = store.num_regions
                for start in range(0, n, _COPY_ROWS):
                    span = slice(start, min(start + _COPY_ROWS, n))
                    target = slice(base + span.start, base + span.stop)
                    for name in ROW_FIELDS:
                        block = store.rows(name, span)
                        rows[name][target] = block.astype(rows[name].dtype, copy=False)
                base += n
        return Joined(len(index[0]), total, list(index[2]))


def merge_virtual(sources: Sequence[str | Path], out_path: str | Path, *,
                  attrs: dict) -> Joined:
    """Join stores without copying their regions: the row datasets of `out_path` are HDF5
    virtual datasets over the sources (stored as paths relative to `out_path`'s folder);
    only the small index is written. The sources must stay where they are (a reader refuses
    the store when one is gone)."""
    out_path = Path(out_path)
    with _opened(sources) as stores:
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
            shape, dtype = stores[0].row_layout(name)
            layouts[name] = h5py.VirtualLayout(shape=(total, *shape[1:]), dtype=dtype)
        base = 0
        for store in stores:
            n = store.num_regions
            relative = source_name(store.path, out_path)
            if n:
                for name in ROW_FIELDS:
                    shape = store.row_layout(name)[0]
                    layouts[name][base:base + n] = h5py.VirtualSource(relative, name, shape=shape)
            base += n
        with created_store(out_path, index, attrs=attrs, feature_dim=feature_dim,
                           in_memory=True) as handle:
            for name, layout in layouts.items():
                handle.create_virtual_dataset(name, layout, fillvalue=0)
        return Joined(len(index[0]), total, list(index[2]))
