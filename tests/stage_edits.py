"""Edits of a finished stage folder that a test makes on purpose (odd texts, NaN labels):
the changed file's size and SHA-256 are recorded in MANIFEST.json again, as if the stage had
written it, so the readers' check of finished files lets the edit through to what it tests."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mrhp_prep.verify import FILES_KEY, file_record


def record_again(folder: Path, name: str) -> None:
    """Record file `name` of a finished folder as it is now."""
    manifest_path = Path(folder) / "MANIFEST.json"
    info = json.loads(manifest_path.read_text())
    if name in info.get(FILES_KEY, {}):
        info[FILES_KEY][name] = file_record(Path(folder) / name)
        manifest_path.write_text(json.dumps(info, indent=2))


def write_table(folder: Path, name: str, frame: pd.DataFrame, **options) -> None:
    """Replace table `name` ("reviews", ...) of a manifest folder by `frame`."""
    frame.to_parquet(Path(folder) / f"{name}.parquet", **options)
    record_again(folder, f"{name}.parquet")
