"""Faults of the machine rather than of the input: a full disk, a read-only or unwritable
folder. Each becomes one `EnvironmentFault` (exit 5) that names the folder and what to do.

A write that fails for lack of space reaches us in many shapes: an OSError with errno
ENOSPC (Python's own files, pyarrow), an OSError without an errno (numpy's `tofile`:
"18150 requested and 2016 written"), a RuntimeError (torch.save: "unexpected pos"). So
`diagnose` trusts the errno where there is one, and otherwise looks at the folders being
written: a read-only file system, or almost no free space left, is the cause.

A permission error is the machine's only where the output goes: in a guarded folder (or on
the way to one, made with its parents). On any other file (an input the user named) it is an
input error that names the file (`unreadable_input`, exit 3). A guarded folder may carry the
option that chose it (`OutputFolder`), which the advice then names.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

from .errors import EnvironmentFault, InputError

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
READ_ONLY_ERRNOS = frozenset({errno.EROFS})
DENIED_ERRNOS = frozenset({errno.EACCES, errno.EPERM})
# A failed write with less than this left free is blamed on the disk (a file system refuses
# a write when it cannot place the next block, so at that moment almost nothing is free).
NEARLY_FULL_BYTES = 1 << 20
_RESUME = "then run the same command again: it resumes where it stopped"
_AGAIN = "then run the command again"
_SPACE_WORDS = ("No space left on device", "errno = 28", "Disk quota exceeded")


@dataclass(frozen=True)
class OutputFolder:
    """A folder a command writes into, and the option that chose it ("--out",
    "--images-root"; None when unknown): a fault of its disk names the folder and that
    option."""

    path: Path
    option: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))


Guarded = Union[str, os.PathLike, OutputFolder, None]


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


def _elsewhere(option: str | None) -> str:
    """The advice to write elsewhere: with the option that chose the folder, when known."""
    return f"choose another {option}" if option else "write the output somewhere else"


def disk_full(path: str | os.PathLike, free: int | None = None,
              option: str | None = None) -> EnvironmentFault:
    free = free_bytes(path) if free is None else free
    left = f" ({human_bytes(free)} free)" if free is not None else ""
    return EnvironmentFault(
        f"no space left on the disk that holds {path}{left}", path=str(path), kind="full",
        option=option, hint=f"free space there (or {_elsewhere(option)}), {_RESUME}")


def read_only(path: str | os.PathLike, option: str | None = None) -> EnvironmentFault:
    return EnvironmentFault(
        f"cannot write into {path}: the file system is read-only", path=str(path),
        kind="read-only", option=option,
        hint=f"{_elsewhere(option)} on a writable disk (or make this one writable), {_AGAIN}")


def denied(path: str | os.PathLike, option: str | None = None) -> EnvironmentFault:
    return EnvironmentFault(
        f"permission denied: {path}", path=str(path), kind="denied", option=option,
        hint=f"let this user read and write it (or {_elsewhere(option)}), {_AGAIN}")


def unreadable_input(exc: BaseException) -> InputError | None:
    """The InputError for a file this user may not open that is no output folder's (an input
    file, a folder given to read), or None when `exc` is no such error. For an error that
    `diagnose` did not blame on the machine."""
    for error in _chain(exc):
        if isinstance(error, OSError) and error.errno is not None:
            if error.errno in DENIED_ERRNOS and error.filename:
                return InputError("permission denied: this user may not open it",
                                  file=os.fsdecode(error.filename),
                                  hint=f"let this user read it (or pass another path), {_AGAIN}")
            return None
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _outputs(folders: Iterable[Guarded]) -> list[OutputFolder]:
    return [f if isinstance(f, OutputFolder) else OutputFolder(Path(f))
            for f in folders if f is not None]


def _where(filename: object, folders: Sequence[OutputFolder]
           ) -> tuple[str, str | None, bool]:
    """(what to name, its option, whether it is an output) for a failing file: the output
    folder it lies in (a temporary file's name means nothing to the user), a folder on the
    way to one (made with its parents), or else the file itself, which is then no output."""
    if not filename:
        if folders:
            return str(folders[0].path), folders[0].option, True
        return "the output folder", None, True
    path = Path(os.fsdecode(filename)).absolute()
    for folder in folders:
        absolute = folder.path.absolute()
        if path == absolute or absolute in path.parents:
            return str(folder.path), folder.option, True
    for folder in folders:
        if path in folder.path.absolute().parents:
            return str(path), folder.option, True
    return str(path), None, False


def diagnose(exc: BaseException, folders: Iterable[Guarded] = ()
             ) -> EnvironmentFault | None:
    """The EnvironmentFault behind `exc` (raised while writing into `folders`), or None when
    the machine is not to blame. A permission error is the machine's only in an output
    folder (or on the way to one): elsewhere it concerns an input (`unreadable_input`)."""
    folders = _outputs(folders)
    for error in _chain(exc):
        if isinstance(error, EnvironmentFault):
            return _for_folder(error, folders)
        if isinstance(error, OSError) and error.errno is not None:
            where, option, output = _where(error.filename, folders)
            if error.errno in FULL_ERRNOS:
                return disk_full(where, option=option)
            if error.errno in READ_ONLY_ERRNOS:
                return read_only(where, option=option)
            if error.errno in DENIED_ERRNOS and output:
                return denied(where, option=option)
            return None         # an errno of something else: a missing file, a closed pipe
    if not isinstance(exc, (OSError, RuntimeError)):
        return None
    for folder in folders:
        if is_read_only(folder.path):
            return read_only(folder.path, folder.option)
        free = free_bytes(folder.path)
        if free is not None and free < NEARLY_FULL_BYTES:
            return disk_full(folder.path, free, folder.option)
    text = " ".join(str(error) for error in _chain(exc))
    if any(words in text for words in _SPACE_WORDS):
        if folders:
            return disk_full(folders[0].path, option=folders[0].option)
        return disk_full("the output folder")
    return None


_FAULTS = {"full": disk_full, "read-only": read_only, "denied": denied}


def _for_folder(fault: EnvironmentFault, folders: Sequence[OutputFolder]) -> EnvironmentFault:
    """`fault` naming the output folder it happened in, with the option that chose it (the
    folder the user picked, rather than a folder inside it)."""
    if fault.kind not in _FAULTS or not fault.path:
        return fault
    where, option, output = _where(fault.path, folders)
    option = option or fault.option
    if not output or (where, option) == (fault.path, fault.option):
        return fault
    return _FAULTS[fault.kind](where, option=option)


def require_free_space(folder: str | os.PathLike, needed: int, what: str) -> None:
    """Refuse to start a write of about `needed` bytes that the disk cannot take (for
    writers, such as HDF5, that cannot recover from a failed write)."""
    free = free_bytes(folder)
    if free is not None and free < needed:
        raise EnvironmentFault(
            f"no space left for {what}: it needs about {human_bytes(needed)}, the disk that "
            f"holds {folder} has {human_bytes(free)} free", path=str(folder),
            hint=f"free space there, {_RESUME}")


@contextlib.contextmanager
def environment_guard(*folders: Guarded) -> Iterator[None]:
    """Turn an error that a full or read-only disk caused while writing into `folders` (paths,
    or `OutputFolder`s that name their option) into an EnvironmentFault naming the folder;
    other errors pass unchanged."""
    try:
        yield
    except (OSError, RuntimeError, EnvironmentFault) as exc:
        fault = diagnose(exc, folders)
        if fault is None or fault is exc:
            raise
        raise fault from exc
