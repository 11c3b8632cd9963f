"""Errors a user can act on, and the exit codes the CLI maps them to.

Exit codes of every `mrhp-prep` command:

- 0: the stage finished (items that failed, if any, are listed in its report);
- 1: an unexpected internal error (a bug: please report it with the traceback);
- 2: the command line is wrong (unknown option, missing argument);
- 3: the input is wrong (a file, a row or a field named in the message); nothing was written;
- 4: the stage finished but every item failed, so its output is empty.
"""

from __future__ import annotations

import click

EXIT_OK = 0
EXIT_INPUT = 3
EXIT_ALL_FAILED = 4


class InputError(click.ClickException):
    """Bad input data: says which file, which row, which field, and what to do."""

    exit_code = EXIT_INPUT

    def __init__(self, message: str, *, file: str | None = None, row: object = None,
                 field: str | None = None, hint: str | None = None):
        where = []
        if file is not None:
            where.append(f"file {file}")
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        text = (", ".join(where) + ": " if where else "") + message
        if hint:
            text += f"\n  What to do: {hint}"
        super().__init__(text)
        self.file, self.row, self.field, self.hint = file, row, field, hint


class AllItemsFailed(click.ClickException):
    """Every item of a stage failed: the output would be empty."""

    exit_code = EXIT_ALL_FAILED
