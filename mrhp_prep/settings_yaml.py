"""Reading settings written in YAML, which may be hostile: every `--config` file, `train
--config`, the pipelines of `run`, the values of `--set KEY=VALUE`, a run's config.yaml.

One loader for all of them refuses, naming the file and the line:

- nesting deeper than `MAX_DEPTH` levels (YAML's composer recurses: a RecursionError
  otherwise);
- aliases that expand the document beyond `MAX_EXPANDED` values ("billion laughs": nine
  short lines can stand for 10^9 values, and every walk over the settings would expand
  them). Anchors and aliases themselves stay allowed (a pipeline may share `args:` between
  stages) while the expanded document stays small; an alias inside its own anchor (a
  document that contains itself) is refused;
- a key given twice in one mapping (YAML says keys are unique; PyYAML kept the last one
  without a word);
- more than one document in one file.

The depth and expansion checks walk the parser's events before any object is built, so a
refused file costs no more than reading it once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError

MAX_DEPTH = 64
MAX_EXPANDED = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _line(mark) -> str:
    return f"line {mark.line + 1}" if mark is not None else "the file"


def _refuse(source: str, message: str, mark, hint: str) -> InputError:
    return InputError(f"{message} ({_line(mark)})", file=source, hint=hint)


def _check_events(text: str, source: str) -> None:
    """Refuse deep nesting and alias bombs from the parser's events (no objects built)."""
    stack: list[list] = []               # per open collection: [expanded size, anchor]
    sizes: dict[str, int] = {}           # finished anchors -> their expanded size
    open_anchors: set[str] = set()
    total = 0

    def add(size: int, mark) -> None:
        nonlocal total
        if stack:
            stack[-1][0] += size
            grown = stack[-1][0]
        else:
            total += size
            grown = total
        if grown > MAX_EXPANDED:
            raise _refuse(source, f"the aliases in this file expand it to more than "
                                  f"{MAX_EXPANDED} values", mark,
                          "settings never need that many: write the values out, or use "
                          "fewer anchors (&name) and aliases (*name)")

    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(stack) >= MAX_DEPTH:
                raise _refuse(source, f"settings nested deeper than {MAX_DEPTH} levels",
                              event.start_mark, "settings are option names and values; "
                                                "nest them only as the format says")
            stack.append([1, event.anchor])
            if event.anchor:
                open_anchors.add(event.anchor)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            size, anchor = stack.pop()
            if anchor:
                sizes[anchor] = size
                open_anchors.discard(anchor)
            add(size, event.start_mark)
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor:
                sizes[event.anchor] = 1
            add(1, event.start_mark)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor in open_anchors:
                raise _refuse(source, f"the alias *{event.anchor} is used inside its own "
                                      f"anchor &{event.anchor}: the settings would contain "
                                      "themselves", event.start_mark, "remove that alias")
            add(sizes.get(event.anchor, 1), event.start_mark)   # unknown: the loader says so


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:      # `<<: *defaults` merges, it repeats nothing
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:                   # unhashable: the base class says so
                    continue
                if first is not key_node.start_mark:
                    raise _DuplicateKey(f"the key {key!r} is given twice ({_line(first)} and "
                                        f"{_line(key_node.start_mark)})")
        return super().construct_mapping(node, deep=deep)


class _DuplicateKey(Exception):
    pass


def load_settings(text: str, source: str) -> Any:
    """The value of the YAML `text` (from `source`, named in messages); InputError when it is
    not YAML or is refused (see the module's docstring)."""
    try:
        _check_events(text, source)
        loader = _UniqueKeyLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _DuplicateKey as exc:
        raise InputError(str(exc), file=source, hint="keep one of them") from None
    except yaml.YAMLError as exc:
        where = str(exc).replace('"<unicode string>"', source)
        raise InputError(f"cannot read the settings: {where}", file=source,
                         hint="fix the YAML at the line named above") from None
    except RecursionError:          # a bound the event check did not foresee
        raise InputError("cannot read the settings: nested too deeply", file=source,
                         hint="settings are option names and values; nest them only as the "
                              "format says") from None


def read_settings_file(path: str | os.PathLike) -> Any:
    """The YAML value of the file at `path` (see `load_settings`)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the settings: {exc}", file=str(path),
                         hint="pass a readable YAML file (UTF-8)") from None
    return load_settings(text, str(path))
