"""Coreference backends, registered by name and chosen with `--coref`.

A backend turns a processed review `Doc` into clusters of mentions. Each is a class with:

- `name`: the registry name;
- `needs_full_pipeline`: whether it needs every component of the spaCy pipeline (the
  built-in resolver needs only the tagger, parser and lemmatizer; external models may read
  named entities);
- `prepare(nlp)`: check that it is installed and add its components, raising
  `BackendNotInstalled` with what to install otherwise;
- `clusters(doc, terms, language) -> list[Cluster]`.

Backends: `builtin` (default, offline, on the spaCy parse), `neuralcoref`, `coreferee`,
`spacy-coref` (the span-based experimental spaCy coreference pipelines); see `adapters`.
"""

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


def backend_names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get_backend(name: str):
    """A new instance of the backend registered as `name`."""
    _load_builtins()
    if name not in _REGISTRY:
        raise InputError(f"unknown coreference backend '{name}'", field="--coref",
                         hint=f"choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]()


def _load_builtins() -> None:
    from . import adapters, builtin  # noqa: F401  (their decorators register them)
