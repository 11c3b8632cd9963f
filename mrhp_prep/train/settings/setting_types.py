"""The kinds of value a training setting takes: how a raw value is read, what range it must be
in, and how both are described (in errors and in docs/settings.md).

A value from `--set`, a `--config` file, a preset or a protocol is read as YAML, and YAML 1.1
reads `5e-5` as a string and `"false"` stays a string. Each kind converts such a value (`5e-5`
-> 5e-05, `off` -> False, `1e1` -> 10 for an integer) and refuses what it cannot use, so
`train.lr=-1` or `model.kappa=abc` is an error naming the key instead of a crash, or a silent
wrong run, later on. A kind raises `Refused(expected)`; `Setting.read` turns that into an
InputError naming the key, the value and where it came from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

TRUE_WORDS = {"true", "yes", "on", "1", "y"}
FALSE_WORDS = {"false", "no", "off", "0", "n"}
NULL_WORDS = {"null", "none", "~"}


class Refused(ValueError):
    """A value of the wrong type: `expected` says what would do ("an integer")."""

    def __init__(self, expected: str):
        super().__init__(expected)
        self.expected = expected


class OutOfRange(ValueError):
    """A number of the right type (`number`, converted) outside its range: `allowed` says
    where it must be."""

    def __init__(self, allowed: str, number: float):
        super().__init__(allowed)
        self.allowed, self.number = allowed, number


@dataclass(frozen=True)
class Range:
    """low <= (or <) value <= (or <) high; None = no bound on that side."""

    low: float | None = None
    low_included: bool = True
    high: float | None = None
    high_included: bool = False

    def describe(self) -> str:
        """'>= 0', '> 0 and < 1': the words of the errors and of the docs table."""
        left = "" if self.low is None else f"{'>=' if self.low_included else '>'} {self.low}"
        right = "" if self.high is None else f"{'<=' if self.high_included else '<'} {self.high}"
        return " and ".join(part for part in (left, right) if part)

    def check(self, number: float) -> None:
        too_low = self.low is not None and (
            number < self.low or (number == self.low and not self.low_included))
        too_high = self.high is not None and (
            number > self.high or (number == self.high and not self.high_included))
        if too_low or too_high:
            raise OutOfRange(self.describe(), number)


ANY = Range()


def at_least(low: float) -> Range:
    return Range(low, True)


def above(low: float) -> Range:
    return Range(low, False)


def between(low: float, high: float, high_included: bool = True) -> Range:
    return Range(low, True, high, high_included)


PROBABILITY = between(0, 1, high_included=False)    # dropout: 1 would drop everything


def _as_integer(value: Any, expected: str = "an integer") -> int:
    if isinstance(value, bool):
        raise Refused(expected)
    try:
        number = value if isinstance(value, int) else float(value)
    except (TypeError, ValueError):
        raise Refused(expected) from None
    if isinstance(number, float) and not (math.isfinite(number) and number.is_integer()):
        raise Refused(expected)
    return int(number)


def _as_float(value: Any, expected: str = "a number", non_finite: str = "a finite number"
              ) -> float:
    if isinstance(value, bool):
        raise Refused(expected)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise Refused(expected) from None
    if not math.isfinite(number):
        raise Refused(non_finite)
    return number


def _bounds(limits: Range) -> str:
    return f" {limits.describe()}" if limits.describe() else ""


def _word(value: Any, words: Sequence[str]) -> str | None:
    """The word `value` names (case and spaces do not matter), or None."""
    if isinstance(value, str) and value.strip().lower() in words:
        return value.strip().lower()
    return None


class Kind:
    """What a setting's values are. `convert` returns the value to keep or raises Refused or
    OutOfRange; `type_name` and `allowed` describe it in docs/settings.md; `annotation` is the
    Python type of the typed section objects (`typed_sections.py`)."""

    type_name = "value"
    annotation: Any = Any

    def convert(self, value: Any) -> Any:
        return value

    def allowed(self) -> str:
        return "any"


@dataclass(frozen=True)
class Integer(Kind):
    range: Range = ANY
    type_name = "integer"
    annotation = int

    def convert(self, value: Any) -> int:
        number = _as_integer(value)
        self.range.check(number)
        return number

    def allowed(self) -> str:
        return self.range.describe() or "any"


@dataclass(frozen=True)
class Number(Kind):
    range: Range = ANY
    type_name = "number"
    annotation = float

    def convert(self, value: Any) -> float:
        number = _as_float(value)
        self.range.check(number)
        return number

    def allowed(self) -> str:
        return self.range.describe() or "any finite number"


@dataclass(frozen=True)
class Flag(Kind):
    type_name = "true/false"
    annotation = bool

    def convert(self, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise Refused("true or false")

    def allowed(self) -> str:
        return "true, false (also yes/no, on/off, 1/0)"


@dataclass(frozen=True)
class Choice(Kind):
    """One of a few words; case and surrounding spaces do not matter."""

    words: tuple[str, ...]
    type_name = "word"
    annotation = str

    def convert(self, value: Any) -> str:
        word = None if isinstance(value, bool) else _word(str(value), self.words)
        if word is None:
            raise Refused(" or ".join(self.words))
        return word

    def allowed(self) -> str:
        return ", ".join(self.words)


@dataclass(frozen=True)
class ChoiceOrNumber(Kind):
    """One of a few words, or a finite number (kept as a float); with `null`, also null."""

    words: tuple[str, ...]
    range: Range = ANY
    null: bool = False

    @property
    def type_name(self) -> str:
        return "word, number or null" if self.null else "word or number"

    @property
    def annotation(self) -> Any:
        return str | float | None if self.null else str | float

    def convert(self, value: Any) -> str | float | None:
        if self.null and (value is None or _word(value, tuple(NULL_WORDS)) is not None):
            return None
        word = _word(value, self.words)
        if word is not None:
            return word
        number = _as_float(value, self._expected(), self._expected())
        self.range.check(number)
        return number

    def _expected(self) -> str:
        return " or ".join([*self.words, *(["null"] if self.null else [])]) \
            + " or a finite number"

    def allowed(self) -> str:
        return f"{', '.join([*self.words, *(['null'] if self.null else [])])}, or a " \
            f"number{_bounds(self.range)}"


@dataclass(frozen=True)
class ChoiceOrInteger(Kind):
    """One of a few words, or a whole number (a preset's 4 does not make the word an error,
    and "3" from a pipeline YAML becomes 3)."""

    words: tuple[str, ...]
    range: Range = ANY
    type_name = "word or integer"
    annotation = str | int

    def convert(self, value: Any) -> str | int:
        word = _word(value, self.words)
        if word is not None:
            return word
        number = _as_integer(value, " or ".join(self.words) + " or a whole number")
        self.range.check(number)
        return number

    def allowed(self) -> str:
        return f"{', '.join(self.words)}, or a whole number{_bounds(self.range)}"


@dataclass(frozen=True)
class NumberOrNull(Kind):
    """null (the value is derived from the data) or a number; `integer` keeps whole numbers."""

    integer: bool = False
    range: Range = ANY

    @property
    def type_name(self) -> str:
        return f"{'integer' if self.integer else 'number'} or null"

    @property
    def annotation(self) -> Any:
        return (int if self.integer else float) | None

    def convert(self, value: Any) -> int | float | None:
        if value is None or str(value).strip().lower() in NULL_WORDS:
            return None
        number = _as_integer(value) if self.integer else _as_float(value)
        self.range.check(number)
        return number

    def allowed(self) -> str:
        return f"null, or a {'whole ' if self.integer else ''}number{_bounds(self.range)}"


@dataclass(frozen=True)
class AutoOrFlag(Kind):
    """auto, true or false, kept as given (`true` or the word "true" alike)."""

    type_name = "auto or true/false"
    annotation = str | bool

    def convert(self, value: Any) -> str | bool:
        if isinstance(value, bool) or str(value).lower() in {"auto", "true", "false"}:
            return value
        raise Refused("auto or true or false")

    def allowed(self) -> str:
        return "auto, true, false"


@dataclass(frozen=True)
class WordList(Kind):
    """A YAML list of distinct words among `words` (an empty list included)."""

    words: tuple[str, ...]
    type_name = "list of words"
    annotation = list

    def convert(self, value: Any) -> list:
        expected = f"a list such as [{', '.join(self.words[:2])}] of: {', '.join(self.words)}"
        if not isinstance(value, list):
            raise Refused(expected)
        if any(not isinstance(item, str) or item not in self.words for item in value) \
                or len(set(value)) != len(value):
            raise Refused(f"a list of distinct names among {', '.join(self.words)}")
        return value

    def allowed(self) -> str:
        return "distinct names among " + ", ".join(self.words)


@dataclass(frozen=True)
class Text(Kind):
    """Any text, kept as given."""

    type_name = "text"
    annotation = str
