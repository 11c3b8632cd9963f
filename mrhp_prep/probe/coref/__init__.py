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

from ...errors import InputError
from .registry import _REGISTRY, BackendNotInstalled, Cluster, register_backend

__all__ = ["BackendNotInstalled", "Cluster", "backend_names", "get_backend", "register_backend"]


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
