"""Click options every stage command shares, and how a stage reports back to the user."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import click
import yaml

from .errors import AllItemsFailed, InputError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Eager callback: settings from a YAML file become the command's defaults.

    Options given on the command line still win, because click consults `default_map` only
    for options the user did not give.
    """
    if value is None:
        return None
    try:
        settings = yaml.safe_load(Path(value).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read settings: {exc}", file=value,
                         hint="pass a YAML file of option names and values") from exc
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
                     help="Recompute even when a finished output with the same fingerprint exists."),
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


def report(title: str, rows: Mapping[str, Any], output: str | Path | None = None) -> None:
    """Print a summary block on stderr and the output folder as the last line of stdout."""
    width = max((len(k) for k in rows), default=0)
    click.echo(f"\n{title}", err=True)
    for key, value in rows.items():
        click.echo(f"  {key:<{width}}  {value}", err=True)
    if output is not None:
        click.echo(f"  {'output':<{width}}  {output}", err=True)
        click.echo(str(output))


def fail_if_none_done(done: int, total: int, what: str, output: str | Path) -> None:
    """Exit with code 4 when there were items and none of them worked.

    Stage commands call it after `report`, so the summary is printed and the finished
    folder (with its failures.jsonl) is there to read; a rerun gives the same exit code.
    """
    if total and not done:
        from .cache import FAILURES_NAME

        raise AllItemsFailed(f"every one of the {total} {what} failed; "
                             f"see {Path(output) / FAILURES_NAME}")


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


def resolve_device(name: str):
    """The torch.device a --device value names ("auto": CUDA when available, else CPU).

    Raises InputError for a name torch does not know or a CUDA device this machine lacks.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"unknown device {name!r}", field="--device",
                         hint="use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name} was asked for but no CUDA device is available",
                         field="--device", hint="use --device cpu (or auto)")
    return device


def require_choice(value: str, choices, *, what: str, option: str) -> str:
    """`value` if it is one of `choices`, else an InputError naming the option (for values
    that reach a stage from Python or a pipeline file rather than through click)."""
    if value not in choices:
        raise InputError(f"unknown {what} {value!r}", field=option,
                         hint=f"one of {', '.join(choices)}")
    return value


def resolve_precision(precision: str, device) -> str:
    """"auto" becomes fp16 on a CUDA device and fp32 elsewhere; other values stay."""
    require_choice(precision, PRECISIONS, what="precision", option="--precision")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return precision


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it"):
    """Progress on stderr: a tqdm bar in a terminal; elsewhere (a batch job's log file) a log
    line every 30 s or 5 % with done/total, rate and ETA (see `LogProgress`)."""
    if not sys.stderr.isatty():
        return LogProgress(iterable, total=total, desc=desc, unit=unit)
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)


class LogProgress:
    """The parts of tqdm's interface the stages use, written as log lines.

    A line goes out when `interval` seconds passed or another `step` (a share of `total`)
    was done since the last one, and at `close`:
    `extract-rois: 1200/5000 img (24.0%), 3.2 img/s, ETA 0:19:47`.
    """

    def __init__(self, iterable=None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", interval: float = 30.0, step: float = 0.05):
        import logging

        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit = total, desc or "progress", unit
        self.interval, self.step = interval, step
        self.n = 0
        self.postfix = ""
        self.started = self.last_time = time.monotonic()
        self.last_n = 0
        self.closed = False
        self._log = logging.getLogger("mrhp_prep.progress")

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        by_share = bool(self.total) and (self.n - self.last_n) >= self.step * self.total
        if by_share or now - self.last_time >= self.interval:
            self._emit(now)

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self.postfix = text

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._emit(time.monotonic(), final=True)

    def _emit(self, now: float, final: bool = False) -> None:
        elapsed = max(now - self.started, 1e-9)
        rate = self.n / elapsed
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        share = f" ({100 * self.n / self.total:.1f}%)" if self.total else ""
        if final:
            tail = f"done in {_clock(elapsed)}"
        elif self.total and rate > 0:
            tail = f"ETA {_clock((self.total - self.n) / rate)}"
        else:
            tail = "ETA unknown"
        extra = f", {self.postfix}" if self.postfix else ""
        self._log.info("%s: %s %s%s, %.3g %s/s, %s%s", self.desc, done, self.unit, share, rate,
                       self.unit, tail, extra)
        self.last_time, self.last_n = now, self.n


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
