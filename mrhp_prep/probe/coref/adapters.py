"""Adapters for external coreference models, used when they are installed with their models.

- `neuralcoref`: the spaCy 2 extension SANCL used; reads `doc._.coref_clusters` (clusters
  with `.mentions`, each a Span). It does not install on current Python and spaCy 3.
- `coreferee`: the spaCy 3 component; reads `doc._.coref_chains` (chains of mentions, each a
  list of token indices). Needs `pip install coreferee` and its English model
  (`python -m coreferee install en`).
- `spacy-coref`: span-based spaCy coreference pipelines (spacy-experimental's `coref` and
  `span_resolver` components, e.g. `en_coreference_web_trf`); reads the span groups
  `doc.spans["coref_clusters_1"]`, `["coref_clusters_2"]`, ... Pass the pipeline that holds
  the components with `--spacy-model`.

Their clusters come from the review alone; none is anchored to the product name.
"""

from __future__ import annotations

from .registry import BackendNotInstalled, Cluster, register_backend

SPAN_GROUP_PREFIX = "coref_clusters"


def _spans_to_cluster(spans) -> Cluster:
    mentions = sorted({(span.start, span.end) for span in spans})
    return Cluster(mentions)


def _clusters_in_order(clusters: list[Cluster]) -> list[Cluster]:
    return sorted((c for c in clusters if c.mentions), key=lambda c: c.first)


@register_backend("neuralcoref")
class NeuralcorefBackend:
    """neuralcoref's `doc._.coref_clusters`."""

    needs_full_pipeline = True

    def prepare(self, nlp) -> None:
        try:
            import neuralcoref
        except ImportError as exc:
            raise BackendNotInstalled(
                "coreference backend 'neuralcoref' is not installed",
                field="--coref",
                hint="install neuralcoref and its model (it needs Python <= 3.8 and spaCy 2.x), "
                     "or use --coref builtin") from exc
        if "neuralcoref" not in nlp.pipe_names:
            neuralcoref.add_to_pipe(nlp)

    def clusters(self, doc, terms, language) -> list[Cluster]:
        found = getattr(doc._, "coref_clusters", None) or []
        return _clusters_in_order([_spans_to_cluster(c.mentions) for c in found])


@register_backend("coreferee")
class CorefereeBackend:
    """coreferee's `doc._.coref_chains`."""

    needs_full_pipeline = True

    def prepare(self, nlp) -> None:
        try:
            import coreferee  # noqa: F401
        except ImportError as exc:
            raise BackendNotInstalled(
                "coreference backend 'coreferee' is not installed", field="--coref",
                hint="install coreferee and its model: pip install coreferee && "
                     "python -m coreferee install en; or use --coref builtin") from exc
        if "coreferee" not in nlp.pipe_names:
            try:
                nlp.add_pipe("coreferee")
            except Exception as exc:  # coreferee raises its own error when its model is absent
                raise BackendNotInstalled(
                    f"coreferee could not start: {exc}", field="--coref",
                    hint="install its model: python -m coreferee install en") from exc

    def clusters(self, doc, terms, language) -> list[Cluster]:
        chains = getattr(doc._, "coref_chains", None) or []
        clusters = []
        for chain in chains:
            mentions = set()
            for mention in chain:
                indexes = list(getattr(mention, "token_indexes", mention))
                if indexes:
                    mentions.add((min(indexes), max(indexes) + 1))
            clusters.append(Cluster(sorted(mentions)))
        return _clusters_in_order(clusters)


@register_backend("spacy-coref")
class SpanCorefBackend:
    """Span-based spaCy coreference: `doc.spans["coref_clusters_N"]`."""

    needs_full_pipeline = True

    def prepare(self, nlp) -> None:
        if not any(name.startswith("coref") or name == "span_resolver"
                   or nlp.get_pipe_meta(name).factory.endswith("coref")
                   for name in nlp.pipe_names):
            raise BackendNotInstalled(
                "the spaCy pipeline has no coreference component, so backend 'spacy-coref' "
                "is not installed", field="--spacy-model",
                hint="install spacy-experimental and a coreference pipeline such as "
                     "en_coreference_web_trf, and pass it with --spacy-model; or use "
                     "--coref builtin")

    def clusters(self, doc, terms, language) -> list[Cluster]:
        groups = [key for key in doc.spans if key.startswith(SPAN_GROUP_PREFIX)]
        groups.sort(key=lambda key: int(key.rsplit("_", 1)[-1])
                    if key.rsplit("_", 1)[-1].isdigit() else 0)
        return _clusters_in_order([_spans_to_cluster(doc.spans[key]) for key in groups])
