"""A small real disk for one test: a tmpfs that can be filled up or made read-only.

Mounting needs root (or CAP_SYS_ADMIN), as in CI; elsewhere the tests that need it are
skipped with the reason. The mount always goes away at the end of the test.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

_FILLER = ".filler"


class SmallDisk:
    """A mounted tmpfs at `path`: `fill(leave)` takes all but `leave` bytes, `empty()` gives
    them back; `read_only()` / `writable()` remount it."""

    read_only_words = "read-only"          # what the message says when it is read-only

    def __init__(self, path: Path):
        self.path = path

    def free(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Write a file until the disk refuses, then give back `leave` bytes."""
        filler = self.path / _FILLER
        block = b"\0" * (1 << 16)
        with open(filler, "wb") as handle:
            try:
                while True:
                    handle.write(block)
                    handle.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        size = filler.stat().st_size
        os.truncate(filler, max(0, size - leave))
        assert self.free() <= leave + 8192, self.free()

    def empty(self) -> None:
        (self.path / _FILLER).unlink(missing_ok=True)

    def _remount(self, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True,
                       capture_output=True)

    def read_only(self) -> None:
        self._remount("ro")

    def writable(self) -> None:
        self._remount("rw")


class LockedFolder(SmallDisk):
    """Where no tmpfs can be mounted and we are not root: a plain folder made unwritable
    with chmod (permission denied rather than read-only); it cannot be filled."""

    read_only_words = "permission denied"

    def fill(self, leave: int = 0) -> None:
        pytest.skip("cannot mount a tmpfs to fill up (needs root or CAP_SYS_ADMIN)")

    def read_only(self) -> None:
        self.path.chmod(0o555)

    def writable(self) -> None:
        self.path.chmod(0o755)


def mount_small_disk(path: Path, size: str = "16m"):
    """Generator for a fixture: mounts a tmpfs of `size` at `path`, yields a SmallDisk,
    unmounts (lazily if something still holds it). Without the right to mount: a
    LockedFolder when not root (chmod binds only others), else the test is skipped."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        reason = done.stderr.strip() if done.returncode else ""
    except OSError as exc:
        reason = str(exc)
    if reason:
        if os.geteuid() != 0:
            folder = LockedFolder(path)
            try:
                yield folder
            finally:
                folder.writable()
            return
        pytest.skip(f"cannot mount a tmpfs for the disk-fault tests (they need root or "
                    f"CAP_SYS_ADMIN): {reason}")
    try:
        yield SmallDisk(path)
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def without_permission_override() -> list[str]:
    """The command prefix that runs a process bound by file permissions: nothing for a user
    who is bound already; for root, `setpriv` without the capabilities that let root ignore
    them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so a file of mode 000 is refused as it
    would be to anyone else. Skips the test when root cannot drop them."""
    import shutil

    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    caps = "-dac_override,-dac_read_search"
    if setpriv is None or subprocess.run(
            [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "true"],
            capture_output=True).returncode != 0:
        pytest.skip("running as root without setpriv (util-linux) to give up the right to "
                    "ignore file permissions")
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]
