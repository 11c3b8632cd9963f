"""What a training run read: its inputs' file digests, recorded when it starts and compared
when it resumes.

Each input folder (manifest, RoI, text and probe stores) lists its files' sizes and SHA-256
digests in its MANIFEST.json, and its reader checks the files against them as it opens
(`verify.py`). A run also keeps the digests it started from in `input-files.json`: resuming
after an input was written again (e.g. its stage re-run with --force into the same folder)
would mix two trainings, so it is refused, naming the input and the file. Inputs written
before digests were recorded have none: nothing is compared for them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from ...atomic import write_json_atomic
from ...cache import read_manifest
from ...errors import InputError
from ...verify import FILES_KEY
from ..run_folder import has_checkpoints

INPUT_FILES = "input-files.json"


def input_digests(inputs: Mapping[str, str | None]) -> dict[str, dict[str, str]]:
    """role -> {file name: SHA-256} of each input folder, as its MANIFEST.json records."""
    digests = {}
    for role, path in inputs.items():
        if path:
            files = read_manifest(path).get(FILES_KEY) or {}
            digests[role] = {name: record.get("sha256") for name, record in files.items()}
    return digests


def _read(path: Path) -> dict:
    """input-files.json as written by `check_or_record_inputs`; a damaged file is an
    InputError naming it."""
    try:
        started = json.loads(path.read_text(encoding="utf-8"))
        problem = None if isinstance(started, dict) and all(
            isinstance(v, dict) for v in started.values()) else "not a mapping of input roles"
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = str(exc)
    if problem is not None:
        raise InputError(f"{INPUT_FILES} is damaged ({problem}): the inputs this run started "
                         f"from are unknown", file=str(path),
                         hint="train again without --resume (the same command plus --force "
                              "starts this folder over)")
    return started


def check_or_record_inputs(run_dir: str | Path, inputs: Mapping[str, str | None]) -> None:
    """Record the inputs' digests in a run folder with no checkpoint yet; compare them in one
    with checkpoints (a resumed run) and refuse inputs that changed since it started."""
    path = Path(run_dir) / INPUT_FILES
    now = input_digests(inputs)
    resuming = has_checkpoints(run_dir)
    if not (resuming and path.is_file()):
        write_json_atomic(path, now)
        return
    started = _read(path)
    for role in sorted(set(started) | set(now)):
        before, after = started.get(role, {}), now.get(role, {})
        changed = sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))
        if changed:
            raise InputError(
                f"the {role} input was written again since this run started ({changed[0]} "
                f"changed{' and more' if len(changed) > 1 else ''}): resuming would train on "
                f"two versions of it", file=str(Path(inputs[role] or "") / changed[0]),
                hint="train again without --resume (the same command plus --force starts this "
                     "folder over)")
