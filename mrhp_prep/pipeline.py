"""`run`: execute a YAML pipeline of stages in order, each reusing its cached output.

A pipeline file:

    name: sample                     # optional, for the log
    cache_dir: ../cache              # relative to this file; CLI --cache-dir wins
    stages:
      - command: ingest              # any mrhp-prep command
        name: ingest                 # optional; later stages refer to {ingest}
        args:                        # options without the leading dashes (nms for --nms)
          raw_dir: "{sample}/raw"    # the argument(s) of the command go first
          dataset: amazon

Strings may contain `{sample}` (the bundled sample folder), `{here}` (this file's folder) and
`{NAME}` for the output folder of an earlier stage. Relative paths are taken from the file's
folder. A list gives a command several arguments, or repeats an option that repeats (train's
`set:`); any other option takes one value. Values are read as the option's type: a flag takes
true/false (also "false", "0", "off" as strings), `lowercase: false` gives `--no-lowercase`.

The whole file is checked before the first stage runs: its keys, commands, option names,
values, placeholders and stage names (each must be unique); it is read by the safe settings
loader (`settings_yaml.py`: no deep nesting, alias bombs or repeated keys).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import click

from .cli_options import long_flag, param_for_key, yaml_setting
from .command_table import load_command
from .errors import InputError
from .settings_yaml import read_settings_file
from .stage_summary import report

log = logging.getLogger(__name__)
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_-]+)\}")
_PIPELINE_KEYS = ("name", "cache_dir", "stages")
_STAGE_KEYS = ("command", "name", "args")


def load_pipeline(path: Path) -> dict:
    """The pipeline file, read by the safe settings loader and checked for its keys."""
    spec = read_settings_file(path)
    if not isinstance(spec, dict) or not isinstance(spec.get("stages"), list):
        raise InputError("a pipeline needs a 'stages:' list", file=str(path),
                         hint="see pipelines/sample.yaml for the format")
    if not spec["stages"]:
        raise InputError("the pipeline has no stages ('stages:' is empty)", file=str(path),
                         hint="list at least one stage, see pipelines/sample.yaml")
    _known_keys(spec, _PIPELINE_KEYS, path, None)
    for index, stage in enumerate(spec["stages"]):
        if not isinstance(stage, dict) or "command" not in stage:
            raise InputError("each stage needs a 'command:'", file=str(path), row=f"stage {index}")
        _known_keys(stage, _STAGE_KEYS, path, f"stage {index}")
    return spec


def _known_keys(mapping: dict, known: tuple[str, ...], path: Path, row: str | None) -> None:
    """A misspelt key (`arg:` for `args:`) would otherwise be ignored without a word."""
    for key in mapping:
        if key not in known:
            raise InputError(f"unknown key '{key}'", file=str(path), row=row,
                             hint=f"the keys here are {', '.join(known)}")


def _resolve(value: Any, names: dict[str, str], where: str) -> Any:
    if isinstance(value, list):
        return [_resolve(v, names, where) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        key = match[1]
        if key not in names:
            raise InputError(f"'{{{key}}}' names no earlier stage", row=where,
                             hint=f"known names: {', '.join(sorted(names))}")
        return names[key]
    return _PLACEHOLDER.sub(substitute, value)


def stage_argv(command: click.Command, args: dict, names: dict[str, str], here: Path,
               where: str) -> list[str]:
    """Turn a stage's `args:` mapping into the command's argv, each value checked against
    the type of the option it sets."""
    positional, options = [], []
    for key, raw_value in args.items():
        value = _resolve(raw_value, names, where)
        param = param_for_key(command, key)
        if param is None:
            raise InputError(f"'{command.name}' has no option '{key}'", row=where,
                             hint=f"run 'mrhp-prep {command.name} --help'")
        flag = long_flag(param)
        try:
            # Paths may name the output of an earlier stage: they are checked when it runs.
            value = yaml_setting(param, value, check_paths=False)
        except ValueError as exc:
            flag_note = (" (a flag: true or false)"
                         if isinstance(param, click.Option) and param.is_flag else "")
            raise InputError(str(exc), row=where, field=str(key),
                             hint=f"see 'mrhp-prep {command.name} --help' for what {flag} "
                                  f"takes{flag_note}") from None
        if isinstance(param, click.Argument):
            values = value if isinstance(value, list) else [value]
            positional.extend(str(_as_path(v, here, param)) for v in values)
            continue
        if isinstance(param, click.Option) and param.is_flag:
            if param.secondary_opts:  # a --x/--no-x pair: false must say --no-x
                options.append(flag if value else param.secondary_opts[0])
            elif value:
                options.append(flag)
            continue
        for item in value if isinstance(value, list) else [value]:
            options.extend([flag, str(_as_path(item, here, param))])
    return positional + options


def _as_path(value: Any, here: Path, param: click.Parameter) -> Any:
    """Relative paths in a pipeline are taken from the pipeline file's folder."""
    if (isinstance(param.type, click.Path) and isinstance(value, str)
            and not Path(value).is_absolute() and not value.startswith("<")):
        return str((here / value).resolve())
    return value


def plan_pipeline(path: Path, spec: dict, *, force: bool,
                  cache_dir: str | None) -> list[tuple[str, str, click.Command, list[str]]]:
    """Check every stage of the file before any runs: its command, its options and their
    values, its placeholders, and that no two stages share a name. Returns
    `(name, where, command, argv)` per stage, with `<output of NAME>` for placeholders."""
    from .data.sample import SAMPLE_ROOT

    here = path.resolve().parent
    names = {"sample": str(SAMPLE_ROOT), "here": str(here)}
    root_cache = cache_dir or str((here / spec.get("cache_dir", "cache")).resolve())
    seen: dict[str, str] = {}
    plan = []
    for index, stage in enumerate(spec["stages"]):
        name = str(stage.get("name", stage["command"]))
        where = f"stage {index} ({name})"
        if name in seen or name in ("sample", "here"):
            first = seen.get(name, "a built-in placeholder")
            raise InputError(f"the stage name '{name}' is taken by {first}", file=str(path),
                             row=where, hint="give the stage its own 'name:'")
        seen[name] = where
        command = load_command(str(stage["command"]))
        if command is None:
            raise InputError(f"unknown command '{stage['command']}'", file=str(path), row=where,
                             hint="see 'mrhp-prep --help' for the commands")
        args = stage.get("args") or {}
        if not isinstance(args, dict):
            raise InputError("'args:' must be a mapping of option names to values",
                             file=str(path), row=where)
        try:
            argv = stage_argv(command, args, names, here, where)
        except InputError as exc:
            raise InputError(exc.message, file=str(path)) from None
        params = {p.name for p in command.params}
        if "cache_dir" in params and "--cache-dir" not in argv:
            argv += ["--cache-dir", root_cache]
        if force and "force" in params and "--force" not in argv:
            argv.append("--force")
        names[name] = f"<output of {name}>"
        plan.append((name, where, command, argv))
    return plan


def run_pipeline(path: Path, *, dry_run: bool, force: bool, cache_dir: str | None) -> dict:
    spec = load_pipeline(path)
    plan = plan_pipeline(path, spec, force=force, cache_dir=cache_dir)
    outputs: dict[str, str] = {}
    for index, (name, _where, command, planned) in enumerate(plan):
        # Placeholders now stand for the real folders of the stages that ran.
        argv = [_fill(arg, outputs) for arg in planned]
        click.echo(f"[{index + 1}/{len(plan)}] mrhp-prep {command.name} " + " ".join(argv),
                   err=True)
        if dry_run:
            continue
        started = time.perf_counter()
        # Errors (and Ctrl-C) go up to the command line's group, as a command's own would.
        with command.make_context(f"mrhp-prep {command.name}", list(argv)) as context:
            result = command.invoke(context)
        outputs[name] = str(result)
        log.info("%s finished in %.1f s: %s", name, time.perf_counter() - started, result)
    return outputs


def _fill(arg: str, outputs: dict[str, str]) -> str:
    for name, folder in outputs.items():
        arg = arg.replace(f"<output of {name}>", folder)
    return arg


@click.command("run")
@click.argument("pipeline", type=click.Path(exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Print the commands without running them.")
@click.option("--force", is_flag=True, help="Recompute every stage.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Cache root for every stage (default: the pipeline's cache_dir).")
def run(pipeline, dry_run, force, cache_dir):
    """Run the stages of PIPELINE (a YAML file) in order, reusing cached outputs.

    Example: mrhp-prep run pipelines/sample.yaml
    """
    outputs = run_pipeline(Path(pipeline), dry_run=dry_run, force=force, cache_dir=cache_dir)
    if dry_run:
        return None
    last = list(outputs.values())[-1] if outputs else None
    report("pipeline finished", {name: folder for name, folder in outputs.items()}, last)
    return last
