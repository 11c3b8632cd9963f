"""The table machinery of the bad-input corpus modules of the non-training stages.

Each `test_bad_inputs_<stage>.py` lists `Case`s that build their inputs and run one
`mrhp-prep` command; `check_case` holds the three promises: no traceback, a refusal (exit 3,
the message naming what is wrong) or a listed skip (exit 0, the item in failures.jsonl), and
no finished folder (MANIFEST.json) holding a bad result. Also the release builders that
several stages start from.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml

from mrhp_prep.cli import cli
from release_files import default_tables, write_release


@dataclass
class Case:
    """`build(tmp)` makes the inputs and returns the argv; `refused` needles must be in the
    message of an exit-3 refusal; `listed` items must be in the finished folder's failures
    (with `reasons` among their reasons), the stage exiting 0, or 4 when `all_failed`;
    `absent` strings must not be in the output (advice that would mislead)."""

    name: str
    build: Callable[[Path], list[str]]
    refused: tuple[str, ...] = ()
    listed: tuple[str, ...] = ()
    slow: bool = False  # runs the detector (a few seconds on a CPU)
    reasons: tuple[str, ...] = ()
    all_failed: bool = False
    absent: tuple[str, ...] = ()


def params(cases: list[Case]) -> list:
    """The cases as pytest parameters, named, the slow ones marked."""
    return [pytest.param(c, marks=[pytest.mark.slow] if c.slow else [], id=c.name) for c in cases]


# --- builders shared by several stages --------------------------------------------------------

def ingest_argv(raw: Path, tmp: Path, *extra: str) -> list[str]:
    return ["ingest", str(raw), "--dataset", "amazon", "--category", "electronics",
            "--cache-dir", str(tmp / "cache"), *extra]


def release(tmp: Path, mutate=None) -> Path:
    tables = default_tables()
    if mutate:
        mutate(tables)
    return write_release(tmp / "raw", tables, orient="raw-records")


def raw_json_cell(tmp, kind_split, row, column, literal):
    """Release with one cell replaced by a JSON literal Python's json.dumps would not write."""
    marker = "@@CELL@@"

    def mutate(tables):
        tables[kind_split][row][column] = marker
    raw = release(tmp, mutate)
    path = raw / f"Electronics.{kind_split[0]}.{kind_split[1]}"
    path.write_text(path.read_text().replace(f'"{marker}"', literal))
    return raw


def pipeline_argv(tmp, stages) -> list[str]:
    """`mrhp-prep run` of a pipeline file with these stages, its ingest stages given a release."""
    raw = release(tmp)
    path = tmp / "p.yaml"
    for stage in stages:
        if stage["command"] == "ingest":
            stage.setdefault("args", {}).update(raw_dir=str(raw), dataset="amazon",
                                                category="electronics")
    path.write_text(yaml.safe_dump({"cache_dir": str(tmp / "cache"), "stages": stages}))
    return ["run", str(path)]


# --- hostile YAML ---------------------------------------------------------------------------

def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """YAML whose anchors expand to width**levels strings ("billion laughs"), under `bomb:`."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * width)}]" for k in range(1, levels)]
    return "\n".join(lines) + f"\nbomb: *l{levels - 1}\n"


def deep(levels: int = 5000) -> str:
    return "[" * levels + "]" * levels


def flow_alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The same bomb on one line (flow style), as a `--set KEY=VALUE` value can hold it."""
    parts = [f"&l0 [{', '.join(['lol'] * width)}]"]
    parts += [f"&l{k} [{', '.join([f'*l{k - 1}'] * width)}]" for k in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


# --- the checks -------------------------------------------------------------------------------

NUMPY_REPR = re.compile(r"\bnp\.(float|int|uint|bool|str)\w*\(")


def assert_plain_numbers(output: str) -> None:
    """Values in messages print as plain numbers ("nan", "3"), never as numpy reprs
    ("np.float64(nan)")."""
    found = NUMPY_REPR.search(output)
    assert found is None, f"a numpy repr in the message: {output}"


def stage_folders(tmp: Path) -> set[Path]:
    """The finished and unfinished stage folders under `tmp` (their marker files)."""
    return set(tmp.rglob("MANIFEST.json")) | set(tmp.rglob(".stage.json"))


def run_case(runner, case: Case, tmp: Path, *inputs) -> None:
    """Builds the case's inputs (`case.build(tmp, *inputs)`) and checks its promises; stage
    folders the build itself made are not counted as left by the run."""
    argv = case.build(tmp, *inputs)
    before = stage_folders(tmp)
    result = runner.invoke(cli, argv)
    output = result.output
    assert "Traceback" not in output, output
    assert_plain_numbers(output)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    new = stage_folders(tmp) - before
    for needle in case.absent:
        assert needle not in output, (needle, output)
    if case.refused:
        assert result.exit_code == 3, output
        for needle in case.refused:
            assert needle in output, (needle, output)
        assert not new, f"a refused run left a stage folder: {new}"
        assert not (tmp / "out" / "products.parquet").exists()
    else:
        assert result.exit_code == (4 if case.all_failed else 0), output
        folder = Path(result.stdout.strip().splitlines()[-1])
        records = [json.loads(line)
                    for line in (folder / "failures.jsonl").read_text().splitlines()]
        failures = [record["item"] for record in records]
        for item in case.listed:
            assert item in failures, (item, failures)
        for reason in case.reasons:
            assert reason in {record["reason"] for record in records}, (reason, records)
        if case.all_failed:     # nothing was stored: the store holds no image
            from mrhp_prep.vision.store import RoiStore

            with RoiStore(folder) as store:
                assert not store.image_ids, store.image_ids
