"""Write files so that a reader never sees half of one: write beside, fsync, rename."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from .faults import environment_guard

# Read once at import: os.umask can only be read by setting it, which is not thread-safe.
_UMASK = os.umask(0)
os.umask(_UMASK)


def plain_file_mode() -> int:
    """The mode `open(path, "w")` would give a new file: 0o666 less the umask (mkstemp's
    files are 0600, private to their owner, until changed)."""
    return 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; rename it to `final` only on success.

    A write that fails on a full or read-only disk raises an EnvironmentFault naming the
    folder. The disk is looked at before the temporary file is removed: only then does a
    full disk still look full (libraries often report it without an errno)."""
    final = Path(final)
    with environment_guard(final.parent):
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with environment_guard(final.parent):
            yield tmp_path
            with open(tmp_path, "rb+") as handle:
                os.fsync(handle.fileno())
            os.chmod(tmp_path, plain_file_mode())
            os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json_atomic(path: str | os.PathLike, payload: object, *,
                      allow_nan: bool = True) -> None:
    """Write `payload` as indented JSON to `path` atomically; `allow_nan=False` refuses NaN
    and inf (a ValueError) so the file stays strict JSON."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str,
                                  allow_nan=allow_nan) + "\n", encoding="utf-8")
