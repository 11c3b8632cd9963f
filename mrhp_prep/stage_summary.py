"""What a stage tells the user when it ends: a summary block on stderr, its output folder
as the last line of stdout, and the refusal of an output in which every item failed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping

from .errors import AllItemsFailed


def report(title: str, rows: Mapping[str, Any], output: str | Path | None = None) -> None:
    """Print a summary block on stderr and the output folder as the last line of stdout."""
    width = max((len(k) for k in rows), default=0)
    lines = [f"\n{title}"] + [f"  {key:<{width}}  {value}" for key, value in rows.items()]
    if output is not None:
        lines.append(f"  {'output':<{width}}  {output}")
    print("\n".join(lines), file=sys.stderr, flush=True)
    if output is not None:
        print(str(output), file=sys.stdout, flush=True)


def fail_if_none_done(done: int, total: int, what: str, output: str | Path) -> None:
    """Exit with code 4 when there were items and none of them worked.

    Stage commands call it after `report`, so the summary is printed and the finished
    folder (with its failures.jsonl) is there to read; a rerun gives the same exit code.
    """
    if total and not done:
        from .cache import FAILURES_NAME

        raise AllItemsFailed(f"every one of the {total} {what} failed; "
                             f"see {Path(output) / FAILURES_NAME}")
