"""Command-line options that contradict each other are refused instead of silently ignored.

- `train --resume RUN` continues RUN with its own config.yaml and input folders. A --model or
  input folder that differs from the run's, or --config / --preset / --protocol / --set /
  --allow-partial / --force (which a resumed run cannot apply: it continues, never starts
  again), is an error: exit 2, naming each option.
  Passing the run's own values is allowed.
- `predict` ranks either the given --product ids or a whole --split, never both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ...errors import CommandLineError
from ..run_folder import INPUT_ROLES, read_run_config

SETTING_OPTIONS = {"config_file": "--config", "preset": "--preset", "protocol": "--protocol",
                   "set": "--set",
                   "allow_partial": "--allow-partial", "force": "--force"}


def check_resume_options(resume: str, given: Mapping[str, Any]) -> None:
    """Refuse `given` options (name -> value) that disagree with the run in `resume`."""
    config = read_run_config(resume)
    inputs = config["inputs"]
    problems = []
    trained = config["model"]["name"]
    if "model" in given and given["model"] != trained:
        problems.append(f"--model {given['model']} (the run trains {trained})")
    for role in INPUT_ROLES:
        if role in given and given[role] is not None:
            wanted = str(Path(given[role]).resolve())
            if wanted != inputs[role]:
                problems.append(f"--{role} {given[role]} (the run reads "
                                f"{inputs[role] or 'none'})")
    for name, flag in SETTING_OPTIONS.items():
        if given.get(name):
            problems.append(f"{flag} (a resumed run keeps its config.yaml)")
    if problems:
        raise CommandLineError(
            f"--resume {resume} continues that run with its own settings; these options "
            f"disagree with it or would be ignored: {'; '.join(problems)}. Drop them, or start "
            f"a new run without --resume.")


def check_predict_selection(products, split) -> None:
    """--product and --split together are ambiguous (union? intersection?): refuse."""
    if products and split:
        raise CommandLineError("pass either --product (repeatable) or --split, not both: "
                               "--split ranks every product of the split, --product only the "
                               "given ones (from any split)")
