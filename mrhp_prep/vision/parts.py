"""Part files of an unfinished extract-rois run, and how a resumed run trusts them.

A run writes `parts/part-NNNNN.h5` (the store layout of `store.py`, plus the failures of its
images), one per `part_size` images, atomically; beside each, `part-NNNNN.json` records its
size and SHA-256 (`verify.record_part`, hashed from the bytes written). A resumed run keeps
the images of the parts that match their record and redoes those of a part that does not
(cut short, changed) or whose record is damaged: it is deleted, with a warning that names
it. A part without a record (killed between the two writes, or an older version's) is kept
when it reads as a store.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from ..errors import InputError
from ..verify import part_problem, read_part_record, record_part
from .store import ImageRegions, RoiStore
from .store_write import write_recorded_store

log = logging.getLogger(__name__)

PARTS_DIR = "parts"


def list_parts(folder: str | Path) -> list[Path]:
    parts = Path(folder) / PARTS_DIR
    return sorted(parts.glob("part-*.h5")) if parts.is_dir() else []


def next_part_path(folder: str | Path) -> Path:
    existing = list_parts(folder)
    number = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
    return Path(folder) / PARTS_DIR / f"part-{number:05d}.h5"


def _record_path(part: Path) -> Path:
    return part.with_suffix(".json")


def write_part(folder: str | Path, regions: Sequence[ImageRegions], failures: Sequence[dict],
               **options) -> Path:
    """The next part file of `folder` (`write_store` options), then its record."""
    path = next_part_path(folder)
    written = write_recorded_store(path, regions, failures=failures, **options)
    record_part(_record_path(path), path, file=written)
    return path


def _problem(part: Path) -> str | None:
    """What is wrong with a part, or None when a resumed run can keep it. A recorded part
    is checked against its record only; an unrecorded one is opened."""
    record_path = _record_path(part)
    if record_path.exists():
        record = read_part_record(record_path)
        if record is None:
            return "has a damaged record"
        if record.get("file") is not None:
            return part_problem(part, record["file"])
    try:
        RoiStore(part).close()
    except InputError as exc:
        return f"cannot be read ({exc.message.splitlines()[0]})"
    return None


def usable_parts(folder: str | Path) -> list[Path]:
    """The part files of `folder` a resumed run can keep; damaged ones are deleted (with
    their record), so their images are extracted again."""
    kept = []
    for part in list_parts(folder):
        found = _problem(part)
        if found is None:
            kept.append(part)
            continue
        log.warning("part file %s %s: deleting it; its images are extracted again", part, found)
        part.unlink()
        _record_path(part).unlink(missing_ok=True)
    return kept


def done_in_parts(parts: Sequence[Path]) -> tuple[set[str], list[dict]]:
    """(the image ids, the failure records) the parts hold, each part read once."""
    done: set[str] = set()
    failures: list[dict] = []
    for part in parts:
        with RoiStore(part) as store:
            done.update(store.image_ids)
            found = store.failures()
        done.update(f["item"] for f in found)
        failures.extend(found)
    return done, failures
