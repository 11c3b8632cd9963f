"""`run`: execute a YAML pipeline of stages in order, each reusing its cached output.

A pipeline file:

    name: sample                     # optional, for the log
    cache_dir: ../cache              # relative to this file; CLI --cache-dir wins
    stages:
      - command: ingest              # any mrhp-prep command
        name: ingest                 # optional; later stages refer to {ingest}
        args:                        # options without the leading dashes
          raw_dir: "{sample}/raw"    # the argument(s) of the command go first
          dataset: amazon

Strings may contain `{sample}` (the bundled sample folder), `{here}` (this file's folder) and
`{NAME}` for the output folder of an earlier stage. Relative paths are taken from the file's
folder. A list value repeats the option; `true` is a flag.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import click
import yaml

from .errors import InputError
from .options import report

log = logging.getLogger(__name__)
_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_-]+)\}")


def load_pipeline(path: Path) -> dict:
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read the pipeline: {exc}", file=str(path)) from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("stages"), list):
        raise InputError("a pipeline needs a 'stages:' list", file=str(path),
                         hint="see pipelines/sample.yaml for the format")
    for index, stage in enumerate(spec["stages"]):
        if not isinstance(stage, dict) or "command" not in stage:
            raise InputError("each stage needs a 'command:'", file=str(path), row=f"stage {index}")
    return spec


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
    """Turn a stage's `args:` mapping into the command's argv."""
    params = {p.name: p for p in command.params}
    positional, options = [], []
    for key, raw_value in args.items():
        value = _resolve(raw_value, names, where)
        param = params.get(key.replace("-", "_"))
        if param is None:
            raise InputError(f"'{command.name}' has no option '{key}'", row=where,
                             hint=f"run 'mrhp-prep {command.name} --help'")
        if isinstance(param, click.Argument):
            values = value if isinstance(value, list) else [value]
            positional.extend(str(_as_path(v, here, param)) for v in values)
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(param, click.Option) and param.is_flag:
            if value:
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


def run_pipeline(path: Path, *, dry_run: bool, force: bool, cache_dir: str | None) -> dict:
    from .cli import cli
    from .data.sample import SAMPLE_ROOT

    spec = load_pipeline(path)
    here = path.resolve().parent
    names = {"sample": str(SAMPLE_ROOT), "here": str(here)}
    root_cache = cache_dir or str((here / spec.get("cache_dir", "cache")).resolve())
    outputs: dict[str, str] = {}
    for index, stage in enumerate(spec["stages"]):
        name = stage.get("name", stage["command"])
        where = f"stage {index} ({name})"
        context = click.Context(cli)
        command = cli.get_command(context, stage["command"])
        if command is None:
            raise InputError(f"unknown command '{stage['command']}'", file=str(path), row=where)
        argv = stage_argv(command, stage.get("args") or {}, names, here, where)
        if "cache_dir" in {p.name for p in command.params} and "--cache-dir" not in argv:
            argv += ["--cache-dir", root_cache]
        if force and "force" in {p.name for p in command.params}:
            argv.append("--force")
        click.echo(f"[{index + 1}/{len(spec['stages'])}] mrhp-prep {stage['command']} "
                   + " ".join(argv), err=True)
        if dry_run:
            names[name] = f"<output of {name}>"
            continue
        started = time.perf_counter()
        result = command.main(argv, prog_name=f"mrhp-prep {stage['command']}",
                              standalone_mode=False)
        names[name] = outputs[name] = str(result)
        log.info("%s finished in %.1f s: %s", name, time.perf_counter() - started, result)
    return outputs


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
