"""Progress in a batch log: with stderr not a terminal, stages log done/total, rate and ETA."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from pathlib import Path

from mrhp_prep.progress import LogProgress, progress

LINE = re.compile(r"work: (\d+)/(\d+) img \((\d+\.\d)%\), ([\d.e+]+) img/s, "
                  r"(ETA \d+:\d\d:\d\d|done in \d+:\d\d:\d\d|stopped after \d+:\d\d:\d\d)")


def _lines(caplog) -> list[re.Match]:
    return [LINE.search(r.getMessage()) for r in caplog.records if r.name == "mrhp_prep.progress"]


def test_a_line_every_five_percent_with_rate_and_eta(caplog):
    caplog.set_level(logging.INFO, logger="mrhp_prep.progress")
    bar = LogProgress(total=200, desc="work", unit="img", interval=3600)
    for _ in range(200):
        bar.update(1)
    bar.close()
    lines = _lines(caplog)
    assert all(lines), [r.getMessage() for r in caplog.records]
    done = [int(m[1]) for m in lines]
    assert done == list(range(10, 201, 10)) + [200], done   # every 5 % of 200, then the total
    assert all(m[2] == "200" for m in lines)
    assert lines[0][3] == "5.0" and lines[-1][3] == "100.0"
    assert lines[0][5].startswith("ETA") and float(lines[0][4]) > 0
    assert lines[-1][5].startswith("done in")


def test_a_line_every_interval_when_progress_is_slow(caplog):
    caplog.set_level(logging.INFO, logger="mrhp_prep.progress")
    bar = LogProgress(total=10_000, desc="work", unit="img", interval=0.05)
    for _ in range(3):
        time.sleep(0.06)
        bar.update(1)
    bar.close()
    lines = _lines(caplog)
    assert [int(m[1]) for m in lines] == [1, 2, 3, 3]
    assert lines[-1][5].startswith("stopped after")     # closed at 3 of 10 000


def test_non_terminal_stderr_gets_log_lines_not_a_bar(tmp_path):
    script = ("import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
              "from mrhp_prep.progress import progress\n"
              "bar = progress(total=40, desc='work', unit='img')\n"
              "[bar.update(1) for _ in range(40)]; bar.close()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], check=True)
    assert "work: 40/40 img (100.0%)" in done.stderr and "\r" not in done.stderr
    assert type(progress(total=1)).__name__ == "LogProgress"  # pytest's stderr is no terminal


def test_closed_before_its_total_says_it_stopped_not_done(caplog):
    caplog.set_level(logging.INFO, logger="mrhp_prep.progress")
    bar = LogProgress(total=200, desc="work", unit="img", interval=3600)
    for _ in range(30):
        bar.update(1)
    bar.close()                  # Ctrl-C or an error in the middle
    last = caplog.records[-1].getMessage()
    assert "work: 30/200 img (15.0%)" in last and "stopped after 0:00:00" in last
    assert "done" not in last
