"""Progress on stderr: a bar in a terminal, log lines with rate and ETA in a batch job's log."""

from __future__ import annotations

import sys
import time
from typing import Any


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it"):
    """Progress on stderr: a tqdm bar in a terminal; elsewhere (a batch job's log file) a log
    line every 30 s or 5 % with done/total, rate and ETA (see `LogProgress`). Either one is
    a context manager that closes it."""
    if not sys.stderr.isatty():
        return LogProgress(iterable, total=total, desc=desc, unit=unit)
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)


class LogProgress:
    """The parts of tqdm's interface the stages use, written as log lines.

    A line goes out when `interval` seconds passed or another `step` (a share of `total`)
    was done since the last one, and at `close`:
    `extract-rois: 1200/5000 img (24.0%), 3.2 img/s, ETA 0:19:47`.
    """

    def __init__(self, iterable=None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", interval: float = 30.0, step: float = 0.05):
        import logging

        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit = total, desc or "progress", unit
        self.interval, self.step = interval, step
        self.n = 0
        self.postfix = ""
        self.started = self.last_time = time.monotonic()
        self.last_n = 0
        self.closed = False
        self._log = logging.getLogger("mrhp_prep.progress")

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        by_share = bool(self.total) and (self.n - self.last_n) >= self.step * self.total
        if by_share or now - self.last_time >= self.interval:
            self._emit(now)

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._emit(time.monotonic(), final=True)

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc) -> None:      # as tqdm: closed however the block ends
        self.close()

    def _emit(self, now: float, final: bool = False) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.n / elapsed
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        share = f" ({100 * self.n / self.total:.1f}%)" if self.total else ""
        if final and self.total and self.n < self.total:   # closed early: Ctrl-C, an error
            tail = f"stopped after {_clock(elapsed)}"
        elif final:
            tail = f"done in {_clock(elapsed)}"
        elif self.total and rate > 0:
            tail = f"ETA {_clock((self.total - self.n) / rate)}"
        else:
            tail = "ETA unknown"
        extra = f", {self.postfix}" if self.postfix else ""
        self._log.info("%s: %s %s%s, %.3g %s/s, %s%s", self.desc, done, self.unit, share, rate,
                       self.unit, tail, extra)
        self.last_time, self.last_n = now, self.n


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
