"""Option values that must be one of a few words, checked where they reach the library."""

from __future__ import annotations

from .errors import InputError


def require_choice(value: str, choices, *, what: str, option: str) -> str:
    """`value` if it is one of `choices`, else an InputError naming the option (for values
    that reach a stage from Python or a pipeline file rather than through the command
    line's own check)."""
    if value not in choices:
        raise InputError(f"unknown {what} {value!r}", field=option,
                         hint=f"one of {', '.join(choices)}")
    return value
