"""One training setting, declared once: its key, kind (type with range or choices), default
(per model where the models differ) and a one-line help.

From the declarations come the models' default configs (`catalog.py`), the reading and
checking of every value that overrides a default (`Setting.read`), the typed section objects
the trainer, sampler, dataset and models use (`typed_sections.py`) and the table of
docs/settings.md (`settings_table.py`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping

from ...errors import InputError
from .setting_types import Kind, OutOfRange, Refused


@dataclass(frozen=True)
class Setting:
    """A key of one config section. `default` holds for every model not in `by_model`."""

    key: str
    kind: Kind
    default: Any
    help: str
    by_model: Mapping[str, Any] = field(default_factory=dict)

    def default_for(self, model: str | None) -> Any:
        """The default of `model` (None: the common default), a fresh copy of a list."""
        return copy.deepcopy(self.by_model.get(model, self.default) if model else self.default)

    def read(self, dotted: str, value: Any, where: str) -> Any:
        """`value` converted to this setting's kind and checked against its range.

        Raises an InputError naming `dotted`, what was expected and `where` the value came
        from (`--set`, a config file, a preset or a protocol)."""
        try:
            return self.kind.convert(value)
        except Refused as refused:
            raise InputError(f"'{dotted}' must be {refused.expected}, not {value!r}", row=where,
                             field=dotted, hint=f"e.g. --set {dotted}=<{refused.expected}>"
                             ) from None
        except OutOfRange as out:
            raise InputError(f"'{dotted}' = {out.number} is out of range: it must be {out.allowed}",
                             row=where, field=dotted, hint=f"choose a value {out.allowed}"
                             ) from None
