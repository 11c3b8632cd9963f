"""Click options every stage command shares, and how a YAML value is checked against the
option it sets (the command line's half of settings files and pipelines)."""

from __future__ import annotations

from typing import Any, Callable

import click

from .devices import PRECISIONS
from .errors import InputError
from .settings_yaml import read_settings_file


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Eager callback: settings from a YAML file become the command's defaults.

    Options given on the command line still win, because click consults `default_map` only
    for options the user did not give.
    """
    if value is None:
        return None
    settings = read_settings_file(value)
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise InputError("settings must be a mapping of option names to values", file=value)
    defaults = dict(ctx.default_map or {})
    for key, setting in settings.items():
        param = param_for_key(ctx.command, key)
        if param is None:   # a misspelt key would otherwise be ignored without a word
            raise InputError(f"'{ctx.command.name}' has no option '{key}'", file=value,
                             field=str(key), hint=f"run 'mrhp-prep {ctx.command.name} --help'")
        try:
            defaults[param.name] = yaml_setting(param, setting)
        except ValueError as exc:
            raise InputError(str(exc), file=value, field=str(key),
                             hint=f"see 'mrhp-prep {ctx.command.name} --help' for what "
                                  f"{key} takes") from None
    ctx.default_map = defaults
    return value


def param_for_key(command: click.Command, key: object) -> click.Parameter | None:
    """The parameter a YAML key names: its option without dashes (`nms` for --nms,
    `max-padding` or `max_padding`) or its Python name (`nms_thresh`, `raw_dir`)."""
    wanted = str(key).replace("-", "_")
    for param in command.params:
        names = {param.name} | {opt.lstrip("-").replace("-", "_") for opt in param.opts
                                if opt.startswith("--")}
        if wanted in names:
            return param
    return None


def long_flag(param: click.Option) -> str:
    """The option's first `--name` (what a generated command line uses)."""
    return next((opt for opt in param.opts if opt.startswith("--")), param.opts[0])


def yaml_setting(param: click.Parameter, value: Any, *, check_paths: bool = True) -> Any:
    """A YAML value checked against the type of the option it sets (ValueError if it does
    not fit): a flag takes true/false or a string or 0/1 meaning one, and becomes a bool;
    an option that repeats takes a list; paths are checked only with `check_paths`."""
    if isinstance(param, click.Option) and param.is_flag:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, str)):
            try:
                return click.BOOL.convert(str(value), param, None)
            except click.BadParameter:
                pass
        raise ValueError(f"{value!r} is not true or false")
    repeats = param.multiple or param.nargs != 1
    items = value if isinstance(value, list) and repeats else [value]
    for item in items:
        if isinstance(item, (dict, list)) or item is None:
            raise ValueError(f"{item!r} is not a single value"
                             + (" (a list repeats the option)" if repeats else ""))
        if isinstance(param.type, click.Path) and not check_paths:
            continue
        try:
            param.type.convert(str(item), param, None)
        except click.BadParameter as exc:
            raise ValueError(f"{item!r} is not a valid value: {exc.message}") from None
    return value


def config_option(func: Callable) -> Callable:
    return click.option("--config", type=click.Path(exists=True, dir_okay=False),
                        is_eager=True, expose_value=False, callback=_load_config,
                        help="YAML file of option values; options on the command line win.")(func)


def stage_options(func: Callable) -> Callable:
    """--out, --cache-dir, --force and --config for a stage command."""
    decorators = [
        click.option("--out", type=click.Path(file_okay=False), default=None,
                     help="Write into this folder instead of the cache."),
        click.option("--cache-dir", type=click.Path(file_okay=False), default="cache",
                     envvar="MRHP_CACHE_DIR", show_default=True, show_envvar=True,
                     help="Cache root: outputs go to CACHE_DIR/<dataset>/<stage>/<fingerprint>/."),
        click.option("--force", is_flag=True, default=False,
                     help="Recompute even when a finished output with the same fingerprint "
                          "exists."),
        config_option,
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def shard_options(func: Callable) -> Callable:
    """--num-shards / --shard-index, defaulting to the scheduler's job-array variables."""
    func = click.option("--shard-index", type=click.IntRange(min=0), default=None,
                        help="This job's shard (default: SLURM_ARRAY_TASK_ID or "
                             "JOB_COMPLETION_INDEX, else 0).")(func)
    func = click.option("--num-shards", type=click.IntRange(min=1), default=None,
                        help="Split the work by id into this many shards (default: "
                             "SLURM_ARRAY_TASK_COUNT, else 1).")(func)
    return func


def manifest_option(*, required: bool = True,
                    help: str = "The ingest output folder.") -> Callable:
    """--manifest DIR: the folder `mrhp-prep ingest` wrote, which the stage reads."""
    return click.option("--manifest", type=click.Path(exists=True, file_okay=False),
                        required=required, default=None, help=help)


def _help(prefix: str, text: str) -> str:
    """Help text behind a prefix that says which modes an option is for ("features: ")."""
    return prefix + text if prefix else text[:1].upper() + text[1:]


def device_option(*, prefix: str = "") -> Callable:
    """--device: where the model runs (see `resolve_device`)."""
    return click.option("--device", default="auto",
                        help=_help(prefix, "where the model runs: auto (a GPU when there is one), "
                                           "cpu, cuda or cuda:N."))


def precision_option(*, prefix: str = "") -> Callable:
    """--precision: the autocast dtype of the model's forward pass (see `resolve_precision`)."""
    return click.option("--precision", type=click.Choice(PRECISIONS), default="auto",
                        help=_help(prefix, "compute precision; auto = fp16 autocast on a GPU, "
                                           "fp32 on a CPU."))
