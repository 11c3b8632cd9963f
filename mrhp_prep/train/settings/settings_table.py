"""docs/settings.md: every training setting, its type, allowed values, default per model and
help, made from the declarations (a test fails when the committed page differs).

    python -m mrhp_prep.train.settings.settings_table --write     # rewrite docs/settings.md
    python -m mrhp_prep.train.settings.settings_table --check     # exit 1 when it is stale
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

from .catalog import MODEL_NAMES, sections_of
from .declaration import Setting
from .model_settings import MODEL_SECTIONS
from .training_settings import RUN_SECTIONS

DOCS_PAGE = Path(__file__).resolve().parents[3] / "docs" / "settings.md"
TITLES = {"sancl": "SANCL", "mcl": "MCL", "mmss": "MM-SS"}

INTRO = """\
# Training settings

<!-- Generated from the declarations in mrhp_prep/train/settings/ by
     `python -m mrhp_prep.train.settings.settings_table --write`; do not edit by hand. -->

Every key a training config has, per section. Set one with `--set SECTION.KEY=VALUE`, in a
`--config FILE` (YAML, one mapping per section), or through a preset or protocol
(`mrhp_prep/configs/<model>.yaml`); precedence and the presets are in docs/train.md. A value is
read as YAML and converted to the setting's type (`5e-5` is a number, `off` is false, `1e1` an
integer 10); a value of the wrong type or out of range is an error (exit 3) that names the
key, the value and where it came from. `auto` values are resolved from the data when the run
starts. The `model` section differs per model; the other sections have the same keys for
every model, with the default of each model in its column.
"""


def _value(value: Any) -> str:
    """A default as YAML writes it: true, null, [a, b], 0.0001."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, float):
        return f"{value:.1f}" if value.is_integer() else f"{value:g}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _row(section: str, setting: Setting, models: Sequence[str]) -> str:
    cells = [f"`{section}.{setting.key}`", setting.kind.type_name, setting.kind.allowed(),
             *(f"`{_value(setting.default_for(m))}`" for m in models), setting.help]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _table(section: str, settings: Sequence[Setting], models: Sequence[str]) -> list[str]:
    names = [f"default ({TITLES[m]})" for m in models] if len(models) > 1 else ["default"]
    header = ["key", "type", "allowed", *names, "help"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for setting in settings:
        lines.append(_row(section, setting, models))
    return lines


def render() -> str:
    """The text of docs/settings.md."""
    lines = [INTRO]
    for model in MODEL_NAMES:
        lines += [f"## model ({TITLES[model]}, `--model {model}`)", ""]
        lines += _table("model", sections_of(model)["model"], [model]) + [""]
    for section, settings in RUN_SECTIONS.items():
        lines += [f"## {section}", ""]
        lines += _table(section, settings, list(MODEL_SECTIONS)) + [""]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    text = render()
    if "--write" in argv:
        DOCS_PAGE.write_text(text)
        print(f"wrote {DOCS_PAGE}")
        return 0
    if "--check" in argv:
        current = DOCS_PAGE.read_text() if DOCS_PAGE.is_file() else ""
        if current != text:
            print(f"{DOCS_PAGE} differs from the declarations: run with --write")
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
