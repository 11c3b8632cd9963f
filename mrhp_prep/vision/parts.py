"""Part files of an unfinished extract-rois run, and how a resumed run trusts them.

A run writes `parts/part-NNNNN.h5` (the store layout of `store.py`, plus the failures of its
images), one per `part_size` images, atomically; beside each, `part-NNNNN.json` records its
size and SHA-256. A resumed run keeps the images of the parts that match their record and
redoes those of a part that does not (cut short, changed, unreadable): it is deleted, with a
warning that names it. Parts without a record (an older version's) are kept when they read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from ..atomic import write_json_atomic
from ..errors import InputError
from ..verify import file_record, part_problem
from .store import ImageRegions, RoiStore, write_store

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
    path = write_store(next_part_path(folder), regions, failures=failures, **options)
    write_json_atomic(_record_path(path), file_record(path))
    return path


def _problem(part: Path) -> str | None:
    try:
        record = json.loads(_record_path(part).read_text())
    except FileNotFoundError:
        record = None
    except ValueError:
        return "its record is damaged"
    found = part_problem(part, record)
    if found:
        return found
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
