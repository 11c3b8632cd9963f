"""The real `mrhp-prep` in a process of its own, watched line by line: wait for a log line
(an event, not a sleep), press Ctrl-C the way a terminal does (SIGINT to the whole process
group, workers included) or kill it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cli_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), os.environ.get("PYTHONPATH", "")])}


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class RunningCli:
    """`mrhp-prep ARGV` started in a new session; stderr is collected as it comes."""

    def __init__(self, argv: list[str]):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mrhp_prep", *argv], env=cli_env(), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(stream, keep), daemon=True)
                         for stream, keep in ((self.process.stderr, True),
                                              (self.process.stdout, False))]
        self.stdout: list[str] = []
        for reader in self._readers:
            reader.start()

    def _read(self, stream, is_stderr: bool) -> None:
        for line in stream:
            with self._seen:
                (self.lines if is_stderr else self.stdout).append(line)
                self._seen.notify_all()

    def wait_for(self, needle: str, timeout: float = 300, *, at_least: int | None = None) -> None:
        """Block until a stderr line contains `needle` (with `at_least`: a line where the
        number right after `needle` is at least that); AssertionError if the process ends or
        `timeout` passes first."""
        pattern = re.compile(re.escape(needle) + (r"(\d+)" if at_least is not None else ""))

        def seen() -> bool:
            for line in self.lines:
                match = pattern.search(line)
                if match and (at_least is None or int(match[1]) >= at_least):
                    return True
            return False
        with self._seen:
            self._seen.wait_for(lambda: seen() or self.process.poll() is not None, timeout)
            assert seen(), f"never saw {needle!r}:\n" + "".join(self.lines[-30:])

    def interrupt(self) -> None:
        """Ctrl-C as a terminal sends it: SIGINT to every process of the group."""
        os.killpg(self.process.pid, signal.SIGINT)

    def kill(self) -> None:
        """`kill -9` of the main process only (its workers are left to notice)."""
        self.process.kill()

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        code = self.process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        return code, "".join(self.lines)


def run_cli(argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mrhp_prep", *argv], env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)
