"""The registry of coreference backends and what they return (`Cluster`): apart from the
package's `__init__`, so that the backend modules can import it while the package imports
them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ...errors import InputError


@dataclass
class Cluster:
    """One coreference chain of a review.

    mentions: token spans `(start, end)` (end exclusive) in the review's Doc, in text order.
    names_product: the built-in resolver's product chain, which is anchored to the product
    name (the antecedent of pronouns that have none in the review); it then counts as holding
    the name's core words and as one more mention.
    """

    mentions: list[tuple[int, int]] = field(default_factory=list)
    names_product: bool = False

    @property
    def size(self) -> int:
        return len(self.mentions) + (1 if self.names_product else 0)

    @property
    def first(self) -> int:
        return min((start for start, _ in self.mentions), default=1 << 30)


class BackendNotInstalled(InputError):
    """A coreference backend that is not installed, or whose model is missing."""


_REGISTRY: dict[str, Callable[[], object]] = {}


def register_backend(name: str):
    """Class decorator: make a backend available as `--coref NAME`."""
    def decorate(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return decorate
