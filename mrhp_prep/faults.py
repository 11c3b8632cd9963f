"""Faults of the machine rather than of the input: a full disk, a read-only or unwritable
folder. Each becomes one `EnvironmentFault` (exit 5) that names the folder and what to do.

A write that fails for lack of space reaches us in many shapes: an OSError with errno
ENOSPC (Python's own files, pyarrow), an OSError without an errno (numpy's `tofile`:
"18150 requested and 2016 written"), a RuntimeError (torch.save: "unexpected pos"). So
`diagnose` trusts the errno where there is one, and otherwise looks at the folders being
written: a read-only file system, or almost no free space left, is the cause.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from .errors import EnvironmentFault

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
READ_ONLY_ERRNOS = frozenset({errno.EROFS})
DENIED_ERRNOS = frozenset({errno.EACCES, errno.EPERM})
# A failed write with less than this left free is blamed on the disk (a file system refuses
# a write when it cannot place the next block, so at that moment almost nothing is free).
NEARLY_FULL_BYTES = 1 << 20
_RESUME = "then run the same command again: it resumes where it stopped"
_AGAIN = "then run the command again"
_SPACE_WORDS = ("No space left on device", "errno = 28", "Disk quota exceeded")


def human_bytes(num: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if num < 1000 or unit == "TB":
            return f"{num:.0f} {unit}" if unit == "B" else f"{num:.1f} {unit}"
        num /= 1000
    return f"{num:.1f} TB"


def _existing(path: str | os.PathLike) -> Path | None:
    """`path` or its nearest folder that exists (a folder not made yet lives on its parent's
    file system)."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return None


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes this user may still write on the file system holding `path` (None: unknown)."""
    found = _existing(path)
    if found is None:
        return None
    try:
        stats = os.statvfs(found)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def is_read_only(path: str | os.PathLike) -> bool:
    found = _existing(path)
    if found is None:
        return False
    try:
        return bool(os.statvfs(found).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def disk_full(path: str | os.PathLike, free: int | None = None) -> EnvironmentFault:
    free = free_bytes(path) if free is None else free
    left = f" ({human_bytes(free)} free)" if free is not None else ""
    return EnvironmentFault(
        f"no space left on the disk that holds {path}{left}", path=str(path), kind="full",
        hint=f"free space there (or choose another --out or --cache-dir), {_RESUME}")


def read_only(path: str | os.PathLike) -> EnvironmentFault:
    return EnvironmentFault(
        f"cannot write into {path}: the file system is read-only", path=str(path),
        kind="read-only",
        hint=f"choose another --out or --cache-dir on a writable disk (or make this one "
             f"writable), {_AGAIN}")


def denied(path: str | os.PathLike) -> EnvironmentFault:
    return EnvironmentFault(
        f"permission denied: {path}", path=str(path), kind="denied",
        hint=f"let this user read and write it (or choose another --out or --cache-dir), "
             f"{_AGAIN}")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _named_folder(filename: object, folders: Sequence[Path]) -> str:
    """The output folder a failing file lies in (a temporary file's name means nothing to
    the user), else the file itself."""
    if not filename:
        return str(folders[0]) if folders else "the output folder"
    path = Path(os.fsdecode(filename)).absolute()
    for folder in folders:
        folder = Path(folder).absolute()
        if path == folder or folder in path.parents:
            return str(folder)
    return str(path)


def diagnose(exc: BaseException, folders: Iterable[str | os.PathLike] = ()
             ) -> EnvironmentFault | None:
    """The EnvironmentFault behind `exc` (raised while writing into `folders`), or None when
    the machine is not to blame."""
    folders = [Path(f) for f in folders if f is not None]
    for error in _chain(exc):
        if isinstance(error, EnvironmentFault):
            return _for_folder(error, folders)
        if isinstance(error, OSError) and error.errno is not None:
            where = _named_folder(error.filename, folders)
            if error.errno in FULL_ERRNOS:
                return disk_full(where)
            if error.errno in READ_ONLY_ERRNOS:
                return read_only(where)
            if error.errno in DENIED_ERRNOS:
                return denied(where)
            return None         # an errno of something else: a missing file, a closed pipe
    if not isinstance(exc, (OSError, RuntimeError)):
        return None
    for folder in folders:
        if is_read_only(folder):
            return read_only(folder)
        free = free_bytes(folder)
        if free is not None and free < NEARLY_FULL_BYTES:
            return disk_full(folder, free)
    text = " ".join(str(error) for error in _chain(exc))
    if any(words in text for words in _SPACE_WORDS):
        return disk_full(folders[0] if folders else "the output folder")
    return None


_FAULTS = {"full": disk_full, "read-only": read_only, "denied": denied}


def _for_folder(fault: EnvironmentFault, folders: Sequence[Path]) -> EnvironmentFault:
    """`fault` naming the output folder it happened in (a stage folder the user chose with
    --out or --cache-dir, rather than a folder inside it)."""
    if fault.kind not in _FAULTS or not fault.path:
        return fault
    folder = _named_folder(fault.path, folders)
    return fault if folder == fault.path else _FAULTS[fault.kind](folder)


def require_free_space(folder: str | os.PathLike, needed: int, what: str) -> None:
    """Refuse to start a write of about `needed` bytes that the disk cannot take (for
    writers, such as HDF5, that cannot recover from a failed write)."""
    free = free_bytes(folder)
    if free is not None and free < needed:
        raise EnvironmentFault(
            f"no space left for {what}: it needs about {human_bytes(needed)}, the disk that "
            f"holds {folder} has {human_bytes(free)} free", path=str(folder),
            hint=f"free space there (or choose another --out or --cache-dir), {_RESUME}")


@contextlib.contextmanager
def environment_guard(*folders: str | os.PathLike | None) -> Iterator[None]:
    """Turn an error that a full or read-only disk caused while writing into `folders` into
    an EnvironmentFault naming the folder; other errors pass unchanged."""
    try:
        yield
    except (OSError, RuntimeError, EnvironmentFault) as exc:
        fault = diagnose(exc, [f for f in folders if f is not None])
        if fault is None or fault is exc:
            raise
        raise fault from exc
