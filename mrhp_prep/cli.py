"""The `mrhp-prep` command line: a thin click group over one library function per command.

Commands are imported only when used (`command_table.py`), so `mrhp-prep --help` answers at
once and a command that needs no torch never imports it.

Library code raises plain exceptions (`errors.py`); the group's invocation below is the one
place that turns them into a message and an exit code, for every command alike, also the
stages a pipeline (`run`) runs: an error the user can act on (exit 2-5), a full or
read-only disk (exit 5), Ctrl-C (exit 130, one line saying how to resume).
"""

from __future__ import annotations

import logging
import sys

import click

from . import __version__
from .command_table import command_names, load_command
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, StageError

INTERRUPTED = ("interrupted: finished work is kept; rerun the same command to resume "
               "where it stopped")


def _click_error(error: StageError, ctx: click.Context) -> click.ClickException:
    """`error` as the click exception that prints it (`Error: ...`) and exits with its code."""
    if error.exit_code == EXIT_USAGE:     # with the usage line of the command it concerns
        name = ctx.invoked_subcommand
        command = load_command(name) if name else None
        where = click.Context(command, info_name=name, parent=ctx) if command else ctx
        return click.UsageError(error.message, ctx=where)
    failure = click.ClickException(error.message)
    failure.exit_code = error.exit_code
    return failure


class LazyGroup(click.Group):
    """A click group that imports each command's module on first use and maps library
    errors to messages and exit codes."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return command_names()

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return load_command(name)

    def invoke(self, ctx: click.Context):
        from .faults import diagnose, unreadable_input
        from .locks import release_all

        try:
            return super().invoke(ctx)
        except StageError as error:     # an EnvironmentFault names its folder already
            raise _click_error(error, ctx) from None
        except KeyboardInterrupt:
            click.echo("\n" + INTERRUPTED, err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except (OSError, RuntimeError) as exc:
            # Raised outside any guarded write: a full or read-only disk names the file; a
            # file this user may not open is an input error.
            error = diagnose(exc) or unreadable_input(exc)
            if error is None:
                raise
            raise _click_error(error, ctx) from None
        finally:
            release_all()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"],
                                              "show_default": True, "max_content_width": 100})
@click.version_option(__version__, prog_name="mrhp-prep")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
def cli(verbose: int, quiet: bool) -> None:
    """Turn the MRHP datasets into training-ready tensors and train ranking models on them.

    Each command is one stage; it writes a cached, documented output folder and prints that
    folder as the last line of stdout. `mrhp-prep run PIPELINE.yaml` chains stages.

    Exit codes: 0 done, 1 internal error, 2 bad command line, 3 bad input (nothing written),
    4 every item failed, 5 the environment failed (disk full, read-only or unwritable
    folder: free space or choose another --out/--cache-dir, then rerun to resume),
    130 interrupted (rerun to resume).
    """
    from .workers import quiet_workers_on_interrupt

    quiet_workers_on_interrupt()
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)


def main() -> None:
    cli(prog_name="mrhp-prep")


if __name__ == "__main__":
    main()
