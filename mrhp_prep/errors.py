"""Errors a user can act on, and the exit codes the CLI maps them to.

Exit codes of every `mrhp-prep` command:

- 0: the stage finished (items that failed, if any, are listed in its report);
- 1: an unexpected internal error (a bug: please report it with the traceback);
- 2: the command line is wrong (unknown option, missing argument, options that contradict
  each other);
- 3: the input is wrong (a file, a row or a field named in the message); nothing was written;
- 4: the stage finished but every item failed, so its output is empty;
- 5: the environment failed: the disk is full, or a folder is read-only or may not be
  written; the message names the folder. Finished work is kept: free space (or choose
  another --out / --cache-dir) and run the same command again to resume;
- 130: interrupted (Ctrl-C, SIGINT); run the same command again to resume.

Library code raises the plain exceptions below; the command line (`cli.py`) turns them into
one message and the exit code, so a library caller never needs click.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_ALL_FAILED = 4
EXIT_ENVIRONMENT = 5
EXIT_INTERRUPTED = 130


class StageError(Exception):
    """An error the user can act on; `exit_code` is what the command exits with."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def format_message(self) -> str:
        return self.message

    def __str__(self) -> str:
        return self.message


def _located(message: str, *, file: str | None = None, row: object = None,
             field: str | None = None, hint: str | None = None) -> str:
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
    return text


class InputError(StageError):
    """Bad input data: says which file, which row, which field, and what to do."""

    exit_code = EXIT_INPUT

    def __init__(self, message: str, *, file: str | None = None, row: object = None,
                 field: str | None = None, hint: str | None = None):
        super().__init__(_located(message, file=file, row=row, field=field, hint=hint))
        self.file, self.row, self.field, self.hint = file, row, field, hint
        self.what = message       # the message alone, without where and what to do


class CommandLineError(StageError):
    """Options that cannot go together (the command line is wrong, exit 2)."""

    exit_code = EXIT_USAGE


class AllItemsFailed(StageError):
    """Every item of a stage failed: the output would be empty."""

    exit_code = EXIT_ALL_FAILED


class EnvironmentFault(StageError):
    """The machine, not the input, stopped the run: a full disk, a read-only or unwritable
    folder. `path` is the folder (or file) concerned, `kind` what went wrong there ("full",
    "read-only", "denied"; None for a refusal made before writing), `option` the command-line
    option that chose the folder, when known."""

    exit_code = EXIT_ENVIRONMENT

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None,
                 kind: str | None = None, option: str | None = None):
        super().__init__(_located(message, hint=hint))
        self.path, self.hint, self.kind, self.option = path, hint, kind, option
