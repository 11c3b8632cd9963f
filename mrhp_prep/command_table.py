"""Which module holds each `mrhp-prep` command: the one table the command line and the
pipeline runner (`run`) both look commands up in.

Modules are imported only when their command is used, so `mrhp-prep --help` answers at once
and a command that needs no torch never imports it.
"""

from __future__ import annotations

import importlib

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
    "compare": "mrhp_prep.train.compare_command:compare_command",
    "show-rois": "mrhp_prep.views.commands:show_rois",
    "show-probes": "mrhp_prep.views.commands:show_probes",
    "report": "mrhp_prep.views.commands:report_command",
}


def command_names() -> list[str]:
    return sorted(COMMANDS)


def load_command(name: str):
    """The command object named `name` (a click command), or None for an unknown name."""
    target = COMMANDS.get(name)
    if target is None:
        return None
    module_name, attribute = target.split(":")
    return getattr(importlib.import_module(module_name), attribute)
