"""Finished files are checked before they are trusted: sizes and SHA-256 digests.

A stage records each output file it finishes as `{"size": bytes, "sha256": hex}`: the stage
folder's `MANIFEST.json` lists them under `"files"` (names relative to the folder), and a
resumable part records its own beside it (its progress JSON). Then

- a later stage that opens the folder (`read_verified`) checks every listed file, the size
  first (free), then the digest, and refuses a changed or damaged one, naming the file and
  the stage to re-run;
- a resumed stage checks each finished part (`part_problem`) and redoes a damaged one. A
  part is marked finished by a JSON record written after it (`record_part`); a record that
  is missing or not JSON (`read_part_record` gives None) means "redo this part".

Hashing reads the whole file (about 1.2 GB/s for SHA-256 in memory on the development
machine; the disk is usually slower). A file already checked whose size, inode, modification
and change times are unchanged is not hashed again: the check is remembered in the process
and in the folder's `.verified.json` (when the folder is writable). Any write to a file
changes its change time (`st_ctime`, which no user call can set back), so an edit in place is
always seen. `MRHP_VERIFY=size` checks sizes only (skips the digests and their cost).

Folders written before the digests were recorded have no `"files"`: they are accepted as
they are (nothing to check against).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Iterable, Mapping

from .atomic import write_json_atomic
from .errors import EnvironmentFault, InputError

log = logging.getLogger(__name__)

FILES_KEY = "files"
VERIFY_ENV = "MRHP_VERIFY"
LEVELS = ("hash", "size")
STAMP_NAME = ".verified.json"
# A file changed less than this long ago may change again within the same tick of the file
# system's clock: its check is not remembered across processes.
_SETTLED_SECONDS = 2.0

_checked: dict[str, tuple] = {}       # this process's checks: path -> (stat key, sha256)


def file_record(path: str | os.PathLike) -> dict:
    """{"size": bytes, "sha256": hex digest} of a file, read in blocks."""
    path = Path(path)
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
        size = os.fstat(handle.fileno()).st_size
    _remember(path, digest)
    return {"size": size, "sha256": digest}


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 (hex) of a whole file (its `file_record`'s)."""
    return file_record(path)["sha256"]


def bytes_record(data: bytes | memoryview) -> dict:
    """The `file_record` a file holding exactly `data` has (no second read of a file just
    written from memory)."""
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def file_records(folder: str | os.PathLike, names: Iterable[str]) -> dict[str, dict]:
    """`file_record` of each name (relative to `folder`), sorted by name."""
    folder = Path(folder)
    return {name: file_record(folder / name) for name in sorted(names)}


def verify_level() -> str:
    """What `MRHP_VERIFY` asks for: "hash" (the default) or "size"."""
    level = os.environ.get(VERIFY_ENV, "hash").strip().lower() or "hash"
    if level not in LEVELS:
        raise InputError(f"{VERIFY_ENV}={level!r} is not one of {', '.join(LEVELS)}",
                         field=VERIFY_ENV, hint="unset it (full check), or set it to size")
    return level


def _stat_key(path: Path) -> tuple:
    stat = path.stat()
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _settled(key: tuple) -> bool:
    """Whether a file's last change is old enough that a later one changes its times."""
    return time.time_ns() - key[4] >= _SETTLED_SECONDS * 1e9


def _remember(path: Path, digest: str) -> None:
    try:
        key = _stat_key(path)
    except OSError:
        return
    if _settled(key):
        _checked[str(path.resolve())] = (key, digest)


def _stamps(folder: Path) -> dict:
    try:
        return json.loads((folder / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return {}


def _known_digest(path: Path, key: tuple, stamp: Mapping | None) -> str | None:
    """The digest of `path` as last checked, if the file has not changed since."""
    seen = _checked.get(str(path.resolve()))
    if seen is not None and seen[0] == key:
        return seen[1]
    if stamp is not None and tuple(stamp.get("stat", ())) == key:
        return stamp.get("sha256")
    return None


def problem(path: Path, record: Mapping, level: str | None = None,
            stamp: Mapping | None = None) -> str | None:
    """What is wrong with `path` against its record ("is missing", a size or digest
    mismatch), or None when it matches. `stamp`: the folder's remembered check of it."""
    if not path.is_file():
        return "is missing"
    key = _stat_key(path)
    if key[2] != record["size"]:
        return (f"is {key[2]:,} bytes, {record['size']:,} when it was finished (cut short "
                "or changed since)")
    if (level or verify_level()) == "size" or "sha256" not in record:
        return None
    digest = _known_digest(path, key, stamp)
    if digest is None:
        digest = file_record(path)["sha256"]
    if digest != record["sha256"]:
        return (f"has changed since it was finished (SHA-256 {digest[:16]}..., recorded "
                f"{record['sha256'][:16]}...)")
    return None


def part_problem(path: str | os.PathLike, record: Mapping | None) -> str | None:
    """A resumable part file against the file record its stage kept: None when it is whole
    (or when there is no record: a part of an older version, trusted as it was)."""
    return None if record is None else problem(Path(path), record)


def record_part(record_path: str | os.PathLike, part: str | os.PathLike,
                file: Mapping | None = None, **details) -> dict:
    """Mark a part finished: `{**details, "file": record}` written atomically to
    `record_path`, after the part itself. `file`: the part's record when already known
    (`bytes_record` of what was written), else the part is hashed. Returns what was written."""
    written = {**details, "file": dict(file) if file is not None else file_record(part)}
    write_json_atomic(record_path, written)
    return written


def read_part_record(record_path: str | os.PathLike) -> dict | None:
    """What `record_part` wrote, or None: no record (the part was not finished) or a damaged
    one (not a JSON object), which means "redo this part" (with a warning naming it)."""
    try:
        record = json.loads(Path(record_path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("the part record %s cannot be read (%s): its part is done again",
                    record_path, exc)
        return None
    if not isinstance(record, dict):
        log.warning("the part record %s is not a JSON object: its part is done again",
                    record_path)
        return None
    return record


def finished_part(part: str | os.PathLike, record_path: str | os.PathLike,
                  redo: str) -> dict | None:
    """The record of a part an earlier run finished, the part whole against it; else None:
    no record, no part, a damaged record, or a part that no longer matches (a warning naming
    the part and what happens now, `redo`, e.g. "writing it again")."""
    record = read_part_record(record_path)
    if record is None or not Path(part).is_file():
        return None
    damaged = part_problem(part, record.get("file"))
    if damaged:
        log.warning("%s %s: %s", part, damaged, redo)
        return None
    return record


def _save_stamps(folder: Path, records: Mapping[str, dict], stamps: dict) -> None:
    """Remember the checked files of `folder` for the next process (best effort)."""
    fresh = dict(stamps)
    for name, record in records.items():
        path = folder / name
        try:
            key = _stat_key(path)
        except OSError:
            continue
        if not _settled(key):
            continue
        fresh[name] = {"stat": list(key), "sha256": record["sha256"]}
    if fresh != stamps:
        try:
            write_json_atomic(folder / STAMP_NAME, fresh)
        except (OSError, EnvironmentFault):
            pass                 # a read-only or another user's folder: checked again next time


def verify_files(folder: str | os.PathLike, manifest: Mapping,
                 names: Iterable[str] | None = None) -> None:
    """Check the files `manifest` records (or those of them in `names`) in `folder`; raise
    InputError naming the first changed, damaged or missing one and the stage to re-run."""
    folder = Path(folder)
    records = manifest.get(FILES_KEY) or {}
    if names is not None:
        wanted = set(names)
        records = {n: r for n, r in records.items() if n in wanted}
    if not records:
        return
    level = verify_level()
    stamps = _stamps(folder)
    # The command that wrote the folder (merge-text writes embed-text folders).
    stage = manifest.get("command") or manifest.get("stage", "the stage")
    for name, record in records.items():
        found = problem(folder / name, record, level, stamps.get(name))
        if found:
            raise InputError(
                f"{name} {found}", file=str(folder / name),
                hint=f"re-run '{stage}' with --force (the same command plus --force) to "
                     f"write it again; anything made from the old file should be made again "
                     f"too")
    if level == "hash":
        _save_stamps(folder, records, stamps)


def read_verified(folder: str | os.PathLike, stage: str | tuple[str, ...] | None = None,
                  names: Iterable[str] | None = None) -> dict:
    """A finished stage folder's MANIFEST.json, after its files passed `verify_files`.
    `stage` may name several stages whose outputs share one format."""
    from .cache import read_manifest

    stages = (stage,) if isinstance(stage, str) else stage
    manifest = read_manifest(folder, stage=stages[0] if stages and len(stages) == 1 else None)
    if stages and len(stages) > 1 and manifest.get("stage") not in stages:
        raise InputError(f"{folder} is the output of '{manifest.get('stage')}', not of "
                         f"{' or '.join(repr(s) for s in stages)}",
                         hint=f"pass the output folder of 'mrhp-prep {stages[0]}'")
    verify_files(folder, manifest, names)
    return manifest
