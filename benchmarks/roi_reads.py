"""Reading RoI features image by image, as training does: the earlier layout against ours.

Data: `--images` images (4000) with 10 to 90 regions each (50 on average) of 2048-d float16
features, written as extract-rois part files and packed by the stage's own last step, so the
store has the layout a real run gives. Then, on that same data:

- earlier: the features in chunks of 64 rows, as every store was written before (format 2
  too), read through h5py; ours: the features in one block, read through a numpy memory map;
  both by `RoiStore.features(image_id, 32)` (the training dataset's call: the first 32
  regions), images in a shuffled order, the page cache warm. Prints images/s (median of
  --repeats passes) and the ratio.
- what the other store operations cost on this store, for the docs' estimates at full size:
  merge-rois' copy (GB/s), a virtual merge (seconds), and the SHA-256 of the file that a
  later stage checks (GB/s).

Run: python benchmarks/roi_reads.py              (about a minute on 2 CPU cores)
     python benchmarks/roi_reads.py --images 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from feature_stores import write_stage_roi_store  # noqa: E402
from mrhp_prep.verify import file_record  # noqa: E402
from mrhp_prep.vision.store import RoiStore  # noqa: E402
from mrhp_prep.vision.store_join import consolidate, merge_virtual  # noqa: E402


def earlier_layout(store: Path, target: Path) -> Path:
    """A copy of `store` with `features` in chunks of 64 rows (how stores were written
    before), everything else as it is."""
    with h5py.File(store, "r") as source, h5py.File(target, "w") as copy:
        for name, dataset in source.items():
            if name == "features":
                rows = dataset.shape[0]
                copy.create_dataset(name, shape=dataset.shape, dtype=dataset.dtype,
                                    chunks=(max(1, min(64, rows)), dataset.shape[1]))
                for start in range(0, rows, 65536):
                    copy[name][start:start + 65536] = dataset[start:start + 65536]
            else:
                source.copy(dataset, copy, name)
        for key, value in source.attrs.items():
            copy.attrs[key] = value
    return target


def read_rate(path: Path, order: list[str], limit: int) -> tuple[float, float]:
    """Images per second of wall time and per CPU second through `RoiStore.features(image_id,
    limit)`, each block copied out as the dataset's concatenation does."""
    with RoiStore(path) as store:
        started, cpu = time.perf_counter(), time.process_time()
        for image_id in order:
            np.array(store.features(image_id, limit))
        return (len(order) / (time.perf_counter() - started),
                len(order) / (time.process_time() - cpu))


def timed(function) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of `function()`."""
    started, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - started, time.process_time() - cpu


def warm(path: Path) -> None:
    with open(path, "rb") as handle:
        while handle.read(1 << 24):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--limit", type=int, default=32, help="regions read per image")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ids = [f"item{i // 2:06d}/pic_{i % 2}.jpg" for i in range(args.images)]
        started = time.perf_counter()
        ours = write_stage_roi_store(root / "rois", ids, boxes=(10, 90)) / "rois.h5"
        earlier = earlier_layout(ours, root / "earlier.h5")
        with RoiStore(ours) as store, RoiStore(earlier) as old:
            assert store.memory_mapped and not old.memory_mapped
            regions = store.num_regions
        size = ours.stat().st_size
        print(f"data: {args.images} images, {regions} regions (mean "
              f"{regions / args.images:.1f}), 2048-d float16, {size / 1e9:.2f} GB "
              f"({time.perf_counter() - started:.0f} s to write)", flush=True)
        rng = np.random.default_rng(0)
        for path in (earlier, ours):
            warm(path)
            read_rate(path, ids[:200], args.limit)
        rates = {"earlier": [], "ours": []}
        for _ in range(args.repeats):
            order = list(rng.permutation(ids))
            rates["earlier"].append(read_rate(earlier, order, args.limit))
            rates["ours"].append(read_rate(ours, order, args.limit))
        (before, before_cpu), (after, after_cpu) = (
            [statistics.median(r[k] for r in rates[side]) for k in (0, 1)]
            for side in ("earlier", "ours"))
        print(f"\nper-image reads, first {args.limit} regions copied out, shuffled, page cache "
              f"warm (median of {args.repeats}; per wall second / per CPU second)")
        print(f"  chunks of 64 rows via h5py (earlier) {before:8.0f} / {before_cpu:8.0f} images/s")
        print(f"  one block via memmap (ours)          {after:8.0f} / {after_cpu:8.0f} images/s")
        print(f"  ratio                                {after / before:8.2f} / "
              f"{after_cpu / before_cpu:8.2f}", flush=True)

        copy = timed(lambda: consolidate([ours], root / "copy.h5", attrs={}, feature_dim=2048))
        virtual = timed(lambda: merge_virtual([ours], root / "virtual.h5", attrs={}))
        warm(ours)
        hashing = timed(lambda: file_record(ours))
        print("\nstore operations on this store (wall / CPU of this process)")
        print(f"  merge-rois copy      {size / copy[0] / 1e9:6.2f} / {size / copy[1] / 1e9:6.2f} "
              f"GB/s ({copy[0]:.1f} s, fsync included)")
        print(f"  merge-rois --virtual {virtual[0]:6.2f} s")
        print(f"  SHA-256 of rois.h5   {size / hashing[0] / 1e9:6.2f} / "
              f"{size / hashing[1] / 1e9:6.2f} GB/s ({hashing[0]:.1f} s, page cache warm)")


if __name__ == "__main__":
    main()
