"""The `mrhp-prep` command line: a thin click group over one library function per command.

Commands are imported only when used, so `mrhp-prep --help` answers at once and a command
that needs no torch never imports it.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from . import __version__

# command name -> "module:attribute". Each module holds the click command and nothing heavy
# at import time.
COMMANDS: dict[str, str] = {
    "ingest": "mrhp_prep.data.commands:ingest",
    "fetch-images": "mrhp_prep.data.fetch_command:fetch_images",
    "probe-masks": "mrhp_prep.probe.commands:probe_masks",
    "embed-text": "mrhp_prep.text.commands:embed_text",
    "merge-text": "mrhp_prep.text.commands:merge_text",
    "extract-rois": "mrhp_prep.vision.commands:extract_rois",
    "merge-rois": "mrhp_prep.vision.commands:merge_rois",
    "import-rois": "mrhp_prep.vision.commands:import_rois",
    "export-rois": "mrhp_prep.vision.commands:export_rois",
    "run": "mrhp_prep.pipeline:run",
    "train": "mrhp_prep.train.commands:train",
    "evaluate": "mrhp_prep.train.commands:evaluate",
    "predict": "mrhp_prep.train.commands:predict",
    "compare": "mrhp_prep.train.report.compare_report:compare_command",
    "show-rois": "mrhp_prep.views.commands:show_rois",
    "show-probes": "mrhp_prep.views.commands:show_probes",
    "report": "mrhp_prep.views.commands:report_command",
}


class LazyGroup(click.Group):
    """A click group that imports each command's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


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
    4 every item failed.
    """
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)


def main() -> None:
    cli(prog_name="mrhp-prep")


if __name__ == "__main__":
    main()
