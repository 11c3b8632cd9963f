"""Worker processes on Ctrl-C: they stay quiet, and the process that started them ends them.

A Ctrl-C in a terminal reaches every process of the foreground group: without care each
worker prints its own KeyboardInterrupt traceback while the main process stops. Workers
forked after `quiet_workers_on_interrupt()` ignore SIGINT instead; the main process, which
gets the KeyboardInterrupt, ends them (`stop_pool`, or the DataLoader's own shutdown) and
says once how to resume.
"""

from __future__ import annotations

import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

_installed = False


def ignore_interrupts() -> None:
    """In a worker: leave SIGINT to the main process (also a pool's `initializer`, for
    workers that are spawned rather than forked)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _quiet_when_the_parent_hangs_up(kind, value, traceback) -> None:
    # A DataLoader worker hands tensors to the main process through file descriptors, served
    # by a thread of the worker; when Ctrl-C stops the main process in the middle of such a
    # hand-over, that thread's connection breaks and it would print a traceback. The main
    # process reports the interrupt itself.
    if isinstance(value, (EOFError, ConnectionError)):
        return
    sys.__excepthook__(kind, value, traceback)


def _quiet_child() -> None:
    ignore_interrupts()
    sys.excepthook = _quiet_when_the_parent_hangs_up


def quiet_workers_on_interrupt() -> None:
    """Every process forked from now on ignores SIGINT and stays silent when the main
    process hangs up on it (the command line calls this once)."""
    global _installed
    if not _installed:
        os.register_at_fork(after_in_child=_quiet_child)
        _installed = True


def stop_pool(pool: ProcessPoolExecutor, timeout: float = 10.0) -> None:
    """End a process pool now: queued tasks are cancelled and running workers terminated
    (on an interrupt or an error their results would be thrown away anyway)."""
    # The pool does not offer this before Python 3.14 (`terminate_workers`): its processes
    # and its manager thread are taken from its attributes.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout)
    if manager is not None:
        # It cleans up after the dead workers; if the interpreter ended first, its exit hook
        # would write to the pipe the thread is closing (an OSError traceback at exit).
        manager.join(timeout)
