"""Writing extract-rois part files on a thread of their own, off the detector's path.

HDF5 writing (and its fsync) takes time the GPU would otherwise sit idle for. `PartWriter`
hands each part to one background thread through a bounded queue: the detector keeps
running while a part is written, and waits only when `max_pending` parts are queued (so
memory stays bounded). Parts are written in the order they were handed over, so their
numbers follow the order of the run, as they do when written inline.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Sequence

from .parts import write_part
from .store import ImageRegions

_STOP = object()


class PartWriter:
    """`write(regions, failures)` queues one part file under `folder`; `close()` waits for
    all and raises the first error the thread met (also raised by the next `write`).

    Use as a context manager; on an exception inside the block the queued parts are still
    written (they are finished work a resumed run would otherwise redo).
    """

    def __init__(self, folder: str | Path, *, feature_dim: int, feature_dtype, attrs: dict,
                 max_pending: int = 2):
        self.folder = Path(folder)
        self.options = {"feature_dim": feature_dim, "feature_dtype": feature_dtype,
                        "attrs": attrs}
        self.queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self.error: BaseException | None = None
        self.written: list[Path] = []
        self.thread = threading.Thread(target=self._loop, name="rois-part-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            job = self.queue.get()
            if job is _STOP:
                return
            if self.error is not None:
                continue             # after a failure, drain without writing
            regions, failures = job
            try:
                path = write_part(self.folder, regions, failures, **self.options)
                self.written.append(path)
            except BaseException as exc:  # handed to the main thread, not lost in this one
                self.error = exc

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def write(self, regions: Sequence[ImageRegions], failures: Sequence[dict]) -> None:
        self._raise_error()
        self.queue.put((list(regions), list(failures)))

    def close(self) -> None:
        if self.thread.is_alive():
            self.queue.put(_STOP)
            self.thread.join()
        self._raise_error()

    def __enter__(self) -> "PartWriter":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
        else:
            try:
                self.close()
            except BaseException:
                pass                 # the block's own exception is the one to report
