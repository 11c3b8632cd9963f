"""Typed section objects made from the declarations: one frozen dataclass field per setting,
with the setting's default. The trainer (`TrainSettings`), the sampler (`SamplingConfig`),
the dataset (`DataConfig`) and the models (`SanclOptions`, `MclOptions`, `MmssOptions`)
subclass them, so a new setting is a new field without touching those classes:

    class DataConfig(section_fields("data")):
        '''The `data:` section of a training config.'''

    DataConfig.from_config(config["data"]).max_text_tokens
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

from ...errors import InputError
from .catalog import sections_of
from .declaration import Setting
from .training_settings import RUN_SECTIONS


class DeclaredSection:
    """Base of the generated dataclasses: `from_config` builds one from a config section."""

    section = ""
    declarations: Mapping[str, Setting] = {}      # field name -> its Setting

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None):
        """The typed section of `section` (a config mapping; missing keys take their default),
        each value read by its declaration (`Setting.read`: converted, its range and choices
        checked, an InputError naming the key). Unknown keys are an error: a typo would
        otherwise silently train the default."""
        values = dict(section or {})
        values.pop("name", None)              # the model's registry name, not an option
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown {cls.__name__} option(s) {unknown}", field=cls.section,
                             hint=f"the known options are {sorted(known)}")
        where = f"the {cls.section} section"
        return cls(**{key: cls.declarations[key].read(f"{cls.section}.{key}", value, where)
                      for key, value in values.items()})


def section_fields(section: str, model: str | None = None, *, exclude: Iterable[str] = (),
                   defaults: Mapping[str, Any] | None = None) -> type:
    """A frozen dataclass with one field per setting of `section` (of `model`; the common
    defaults when None), less `name` and the keys in `exclude`. `defaults` replaces a
    default where the object differs from the config: MCL built without a config has the
    Amazon threshold 1.0 where a config says `auto` (resolved from the data)."""
    settings = sections_of(model)[section] if model else RUN_SECTIONS[section]
    skipped = {"name", *exclude}
    return fields_of([s for s in settings if s.key not in skipped], section, model,
                     defaults=defaults)


def fields_of(settings: Iterable[Setting], section: str, model: str | None = None, *,
              defaults: Mapping[str, Any] | None = None) -> type:
    """A frozen dataclass with one field per setting in `settings` (of config `section`), its
    default `model`'s (None: the common one) unless `defaults` names another."""
    replaced = dict(defaults or {})
    settings = list(settings)
    fields = []
    for setting in settings:
        default = replaced.pop(setting.key) if setting.key in replaced \
            else setting.default_for(model)
        spec = (dataclasses.field(default_factory=lambda value=default: list(value))
                if isinstance(default, list) else dataclasses.field(default=default))
        fields.append((setting.key, setting.kind.annotation, spec))
    if replaced:
        raise KeyError(f"no settings {sorted(replaced)} to give a default")
    name = f"{(model or '').capitalize()}{section.capitalize()}Fields"
    return dataclasses.make_dataclass(
        name, fields, bases=(DeclaredSection,), frozen=True,
        namespace={"section": section, "declarations": {s.key: s for s in settings}})
