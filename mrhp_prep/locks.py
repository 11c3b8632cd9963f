"""One run computes into a stage folder at a time: a lock on `FOLDER/.lock`.

The lock is `flock` on the file, taken without waiting: a second run into the folder is
refused at once ("another run is computing into ..."), also inside one process (a pipeline,
a test), because each `FolderLock` opens the file itself and flock locks belong to the open
file. The kernel drops the lock when the process that took it ends, however it ends
(`kill -9` included), so a rerun can resume at once.

Worker processes forked while a lock is held (DataLoader workers, tokenizer and parser
pools) would inherit the open file, and with it the lock: after a `kill -9` of the run they
kept it for seconds. The child side of every fork therefore closes its copies at once
(`os.register_at_fork`): the lock lives exactly as long as the process that took it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import weakref
from pathlib import Path

from .errors import InputError

LOCK_NAME = ".lock"

# The locks this process holds, by id: the fork hook closes their files in the child, and
# the command line releases what a failed command left held. Weak: a lock whose run object
# is gone is released with it.
_HELD: "weakref.WeakValueDictionary[int, FolderLock]" = weakref.WeakValueDictionary()


class FolderLock:
    """`acquire()` takes the lock of `folder` (InputError when another run holds it);
    `release()` lets it go. Releasing twice, or in a forked child, does nothing."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._owner: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None and self._owner == os.getpid()

    def acquire(self) -> "FolderLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            who = f" (process {holder})" if holder else ""
            raise InputError(f"another run{who} is computing into {self.folder} right now",
                             hint="wait for it to finish (a rerun then reuses its output), "
                                  "or choose another --out folder") from None
        try:    # who holds it, for the message another run would give
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass
        self._fd, self._owner = fd, os.getpid()
        _HELD[id(self)] = self
        return self

    def release(self) -> None:
        _HELD.pop(id(self), None)
        fd, self._fd = self._fd, None
        if fd is not None and self._owner == os.getpid():
            os.close(fd)

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:       # at interpreter exit the kernel drops the lock anyway
            pass


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def release_all() -> None:
    """Release every lock this process still holds (a command that failed half-way)."""
    for lock in list(_HELD.values()):
        lock.release()


def _close_in_child() -> None:
    for lock in list(_HELD.values()):
        fd, lock._fd = lock._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)
