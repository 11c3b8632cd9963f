"""Stage folders: fingerprints, resume, and the MANIFEST.json that marks a folder finished.

Every stage run writes into one folder, `cache/<dataset>/<stage>/<fingerprint>/` by default.
The fingerprint hashes the stage name, its settings, the fingerprints of its inputs and the
stage's format version, so the same inputs and settings map to the same folder.

`MANIFEST.json` is written last and atomically. A folder without it is unfinished: the next run
with the same fingerprint resumes it (each stage keeps its own part files for that), and no
reader ever reads it. A run holds the folder's lock (`locks.py`) from the moment it opens an
unfinished folder until its computation ends (finished, failed or interrupted), so two runs
never compute into one folder and `--force` never clears a folder another run is writing.
A resumed run starts without the temporary `.*.part` files a killed one left in the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import Any, Iterator, Mapping

from . import __version__
from .atomic import write_json_atomic
from .errors import EnvironmentFault, InputError
from .faults import Guarded, OutputFolder, environment_guard
from .locks import LOCK_NAME, FolderLock

log = logging.getLogger(__name__)

MANIFEST_NAME = "MANIFEST.json"
MARKER_NAME = ".stage.json"
FAILURES_NAME = "failures.jsonl"

# Libraries whose versions are recorded when a stage has imported them.
_TRACKED_LIBRARIES = ("numpy", "pandas", "pyarrow", "h5py", "torch", "torchvision", "spacy",
                      "transformers", "tokenizers", "PIL")


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(stage: str, settings: Mapping[str, Any], inputs: Mapping[str, str],
                format_version: int) -> str:
    """16 hex digits identifying one stage computation."""
    payload = {"stage": stage, "settings": settings, "inputs": inputs,
               "format_version": format_version}
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()[:16]


def path_fingerprint(path: str | os.PathLike) -> str:
    """Fingerprint of an input path.

    A finished stage folder answers with its own fingerprint; any other file or folder with a
    hash of its files' relative paths, sizes and modification times (cheap, and it changes
    when a file is replaced).
    """
    path = Path(path)
    manifest = path / MANIFEST_NAME
    if manifest.is_file():
        return json.loads(manifest.read_text())["fingerprint"]
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(path.rglob("*"))
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            # A broken or looping link, a name too long: skipped as a missing file is; the
            # stage that reads it lists it as a failed item.
            continue
        if not S_ISREG(stat.st_mode):
            continue
        rel = file.name if file == path else file.relative_to(path).as_posix()
        digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "mrhp_prep": __version__}
    for name in _TRACKED_LIBRARIES:
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = str(getattr(module, "__version__", "?"))
    return versions


@dataclass
class StageRun:
    """One stage computation in its folder; `finish()` marks it complete.

    An unfinished run holds the folder's lock (`lock`) until `finish`, `discard` or
    `release`; compute inside `with run.computing():`, which always releases it."""

    stage: str
    path: Path
    fingerprint: str
    settings: dict
    inputs: dict
    format_version: int
    complete: bool = False
    failures: list[dict] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    # role -> absolute path of each input, recorded so that readers (the views) can find
    # e.g. the images a store was made from; not part of the fingerprint
    input_paths: dict = field(default_factory=dict)
    lock: FolderLock | None = field(default=None, repr=False)
    # the option that chose the folder ("--out" or "--cache-dir"), named when its disk fails
    option: str | None = None
    _in_computing: bool = field(default=False, repr=False)

    def add_failure(self, item: str, reason: str, **details: Any) -> None:
        """Record one item (an id, a file, a row) that could not be processed, and why."""
        self.failures.append({"item": item, "reason": reason, **details})

    def release(self) -> None:
        """Let another run compute into the folder."""
        if self.lock is not None:
            self.lock.release()

    def discard(self) -> None:
        """Remove an unfinished folder this run created (used when the input is refused)."""
        if not (self.path / MANIFEST_NAME).exists() and self.path.exists():
            shutil.rmtree(self.path)
        self.release()

    def discard_unstarted(self) -> None:
        """Remove the folder when it holds no work yet (only the marker, the lock and empty
        folders), so a refused run leaves nothing behind; keep any resumable work."""
        if self.path.is_dir() and not (self.path / MANIFEST_NAME).exists():
            bookkeeping = {MARKER_NAME, LOCK_NAME}
            if all(p.is_dir() or p.name in bookkeeping for p in self.path.rglob("*")):
                shutil.rmtree(self.path)
        self.release()

    @contextlib.contextmanager
    def computing(self, *also_written: Guarded) -> Iterator["StageRun"]:
        """The computation of the run: a full or read-only disk under the folder (or under
        `also_written`, e.g. a cache beside it) becomes an EnvironmentFault that names it;
        the lock is held until the block ends (also past `finish`, while the stage clears
        its part files), and released however it ends."""
        self._in_computing = True
        try:
            with environment_guard(OutputFolder(self.path, self.option), *also_written):
                yield self
        finally:
            self._in_computing = False
            self.release()

    def manifest(self) -> dict:
        """The MANIFEST.json of a complete run."""
        return read_manifest(self.path)

    def finish(self, counts: Mapping[str, Any], **extra: Any) -> dict:
        """Write the failure report, then MANIFEST.json (atomically, last); the folder is
        then free for others to read. The lock is released here, unless the run is inside
        `computing()`, whose end releases it."""
        failures_path = self.path / FAILURES_NAME
        with open(failures_path, "w", encoding="utf-8") as handle:
            for failure in self.failures:
                handle.write(json.dumps(failure, default=str) + "\n")
        manifest = {
            "stage": self.stage,
            "fingerprint": self.fingerprint,
            "format_version": self.format_version,
            "settings": self.settings,
            "inputs": self.inputs,
            "input_paths": self.input_paths,
            "counts": dict(counts),
            "num_failures": len(self.failures),
            "failures_file": FAILURES_NAME,
            "failures": self.failures[:50],
            "timings": {"started": self.started, "finished": time.time(),
                        "seconds": round(time.time() - self.started, 3)},
            "versions": library_versions(),
            **extra,
        }
        write_json_atomic(self.path / MANIFEST_NAME, manifest)
        self.complete = True
        if not self._in_computing:
            self.release()
        return manifest


def _holds_other_files(path: Path) -> bool:
    return path.is_dir() and any(p.name != LOCK_NAME for p in path.iterdir())


def _clear(path: Path) -> None:
    """Empty a stage folder for --force, keeping the lock file this run holds. MANIFEST.json
    goes first: a reader never finds it beside files already deleted."""
    (path / MANIFEST_NAME).unlink(missing_ok=True)
    for entry in path.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _remove_partial_files(path: Path) -> int:
    """Delete the temporary files (`.*.part`) a killed run left anywhere in its folder;
    returns how many. Only under the folder's lock: another run's are never in flight."""
    removed = 0
    for folder, _, names in os.walk(path):
        for name in names:
            if name.startswith(".") and name.endswith(".part"):
                Path(folder, name).unlink(missing_ok=True)
                removed += 1
    return removed


def _finished_here(path: Path, fp: str) -> bool:
    """Whether `path` holds the finished output of the computation `fp`; an InputError when
    it holds another computation's."""
    if not (path / MANIFEST_NAME).exists():
        return False
    found = read_manifest(path)
    if found.get("fingerprint") == fp:
        return True
    raise InputError(
        f"{path} holds the finished output of another computation "
        f"({found.get('stage')}, fingerprint {found.get('fingerprint')}, not {fp})",
        hint="pass --force to overwrite it, or choose another --out folder")


def open_stage(stage: str, *, dataset: str, settings: Mapping[str, Any],
               inputs: Mapping[str, str | os.PathLike], format_version: int,
               out: str | os.PathLike | None = None, cache_dir: str | os.PathLike = "cache",
               force: bool = False, reopen: bool = False) -> StageRun:
    """Find or create the folder of one stage computation.

    `inputs` maps an input's role to its path; each is replaced by its fingerprint. With
    `out`, that folder is used as it is; otherwise `cache_dir/dataset/stage/fingerprint`.
    A finished folder comes back with `complete=True` unless `force` is set, which clears it,
    or `reopen`, which opens it as unfinished, its work kept, to be completed again (its
    MANIFEST.json is removed; the stage writes it anew when done).
    An unfinished run comes back holding the folder's lock (refused at once when another
    run holds it); the lock is taken before `force` clears anything, and the folder is looked
    at again under it (another run may have finished it meanwhile). A resumed run starts
    without the temporary files a killed run left.
    """
    input_fps = {role: path_fingerprint(p) for role, p in inputs.items() if p is not None}
    input_paths = {role: str(Path(p).resolve()) for role, p in inputs.items() if p is not None}
    settings = json.loads(_canonical(settings))
    fp = fingerprint(stage, settings, input_fps, format_version)
    path = Path(out) if out is not None else Path(cache_dir) / _safe_name(dataset) / stage / fp
    folder = OutputFolder(path, "--out" if out is not None else "--cache-dir")

    def run(**state: Any) -> StageRun:
        return StageRun(stage, path, fp, settings, input_fps, format_version,
                        input_paths=input_paths, option=folder.option, **state)

    marker = path / MARKER_NAME
    if not force and not reopen and _finished_here(path, fp):
        return run(complete=True)
    ours = marker.exists() or (path / MANIFEST_NAME).exists()
    if not ours and _holds_other_files(path):
        raise InputError(f"{path} is not empty and is not a mrhp-prep stage folder",
                         hint="choose another --out folder")
    made = not path.exists()
    try:
        with environment_guard(folder):
            path.mkdir(parents=True, exist_ok=True)
            lock = FolderLock(path).acquire()
    except (OSError, EnvironmentFault):   # cannot be written: leave no empty folder behind
        if made:
            shutil.rmtree(path, ignore_errors=True)
        raise
    try:
        with environment_guard(folder):
            if not force and _finished_here(path, fp):
                if not reopen:           # finished by another run since the look above
                    lock.release()
                    return run(complete=True)
                (path / MANIFEST_NAME).unlink()
                log.info("reopening the finished run in %s", path)
            if force and (marker.exists() or (path / MANIFEST_NAME).exists()):
                log.info("--force: clearing %s", path)
                _clear(path)
            if marker.exists():
                found = json.loads(marker.read_text())
                if found.get("fingerprint") != fp:
                    raise InputError(
                        f"{path} holds an unfinished run of another computation "
                        f"(fingerprint {found.get('fingerprint')}, not {fp}"
                        f"{_what_differs(found, settings, input_fps)})",
                        hint="pass --force to clear it, or choose another --out folder")
                log.info("resuming the unfinished run in %s", path)
                removed = _remove_partial_files(path)
                if removed:
                    log.info("removed %d partial file(s) left by an earlier run", removed)
            write_json_atomic(marker, {"stage": stage, "fingerprint": fp, "settings": settings,
                                       "inputs": input_fps, "format_version": format_version})
    except BaseException:
        lock.release()
        raise
    return run(lock=lock)


def recorded_input(folder: str | os.PathLike, role: str) -> Path | None:
    """Where the finished stage in `folder` read its input `role` from (as MANIFEST.json
    records it), or None: not recorded (an older folder), or no longer there."""
    try:
        recorded = read_manifest(folder).get("input_paths", {}).get(role)
    except (InputError, OSError, ValueError):
        return None
    return Path(recorded) if recorded and Path(recorded).exists() else None


def _what_differs(found: Mapping[str, Any], settings: Mapping[str, Any],
                  inputs: Mapping[str, str]) -> str:
    """"; input manifest was X, now Y; settings a, b differ" between a folder's marker and
    this computation (empty when the marker does not record them)."""
    before = found.get("inputs") or {}
    parts = [f"input {role} was {before.get(role, 'absent')}, now {inputs.get(role, 'absent')}"
             for role in sorted(set(before) | set(inputs)) if before.get(role) != inputs.get(role)]
    old = found.get("settings") or {}
    changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
    if changed:
        parts.append("settings " + ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
                     + " differ")
    return "".join(f"; {part}" for part in parts)


def read_manifest(path: str | os.PathLike, stage: str | None = None) -> dict:
    """Read a finished stage folder's MANIFEST.json; refuse unfinished or foreign folders."""
    path = Path(path)
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        what = "an unfinished stage run" if (path / MARKER_NAME).exists() else "not a stage folder"
        raise InputError(f"{path} is {what} (no {MANIFEST_NAME})",
                         hint="run the stage that makes it (again: it resumes) and pass its "
                              "output folder")
    manifest = json.loads(manifest_path.read_text())
    if stage is not None and manifest.get("stage") != stage:
        raise InputError(f"{path} is the output of '{manifest.get('stage')}', not '{stage}'",
                         hint=f"pass the output folder of 'mrhp-prep {stage}'")
    return manifest


def read_failures(path: str | os.PathLike) -> list[dict]:
    """The items a finished stage folder's failures.jsonl lists (a damaged line is skipped:
    the list only explains gaps, it never decides what is computed)."""
    failures_path = Path(path) / FAILURES_NAME
    if not failures_path.is_file():
        return []
    found = []
    for line in failures_path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict):
                found.append(item)
    return found


def _safe_name(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    return keep or "dataset"
