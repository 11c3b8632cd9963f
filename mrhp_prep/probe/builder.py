"""From review texts to mask rows: one spaCy pass with `nlp.pipe`, then backend and rule.

`ProbeMaskBuilder` holds a loaded pipeline, a coreference backend and a rule. It is built
once per process (the stage's `--workers` processes each build their own).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator

from .coref import get_backend
from .core_words import ProductTerms
from .language import load_language
from .masks import MASK_RULES, ProbeMask

log = logging.getLogger(__name__)

# A sentence longer than this is counted (the parser still handles it, slowly).
LONG_SENTENCE_TOKENS = 500
# An English review with at least this many words, of which fewer than this share are
# English stop words, is counted as probably not English.
LANGUAGE_CHECK_MIN_WORDS = 8
ENGLISH_STOP_SHARE = 0.15


@dataclass
class BuilderConfig:
    language: str = "en"
    spacy_model: str | None = None
    coref: str = "builtin"
    rule: str = "paper"
    batch_size: int = 64


@dataclass
class MaskResult:
    """One review's outcome: a row for the shard, or a failure reason; plus input flags."""

    review_id: str
    row: dict | None = None
    failure: str | None = None
    flags: list[str] = field(default_factory=list)


class ProbeMaskBuilder:
    def __init__(self, config: BuilderConfig):
        if config.rule not in MASK_RULES:
            raise ValueError(f"unknown rule {config.rule!r}")
        self.config = config
        self.backend = get_backend(config.coref)
        self.language = load_language(config.language, config.spacy_model,
                                      full=self.backend.needs_full_pipeline)
        self.backend.prepare(self.language.nlp)
        self.rule = MASK_RULES[config.rule]

    @property
    def nlp(self):
        return self.language.nlp

    def product_terms(self, names: Iterable[str]) -> list[ProductTerms]:
        """Core words of each product name, in order (a name with no noun gives none)."""
        texts = [self.language.name_text(name or "") for name in names]
        docs = self.nlp.pipe(texts, batch_size=self.config.batch_size)
        return [self.language.product_terms(doc) for doc in docs]

    def mask_doc(self, doc, terms: ProductTerms) -> ProbeMask:
        clusters = self.backend.clusters(doc, terms, self.language)
        return self.rule(doc, clusters, terms, self.language)

    def build(self, items: Iterable[tuple[str, str, ProductTerms]]) -> Iterator[MaskResult]:
        """Mask rows of `(review_id, text, terms)` items, in order, batched with nlp.pipe.

        A batch that makes the pipeline fail is redone one review at a time, so one bad
        review fails alone.
        """
        batch: list[tuple[str, str, ProductTerms]] = []
        for item in items:
            batch.append(item)
            if len(batch) >= self.config.batch_size:
                yield from self._build_batch(batch)
                batch = []
        if batch:
            yield from self._build_batch(batch)

    def _build_batch(self, batch):
        texts = [text if isinstance(text, str) else "" for _, text, _ in batch]
        try:
            docs = list(self.nlp.pipe(texts, batch_size=self.config.batch_size))
        except Exception:  # isolate the review that broke the batch
            docs = [None] * len(batch)
        for (review_id, text, terms), doc, clean_text in zip(batch, docs, texts):
            yield self._build_one(review_id, text, clean_text, terms, doc)

    def _build_one(self, review_id, text, clean_text, terms, doc) -> MaskResult:
        result = MaskResult(review_id)
        if not isinstance(text, str) or not text.strip():
            result.flags.append("empty")
        try:
            if doc is None:
                doc = self.nlp(clean_text)
            mask = self.mask_doc(doc, terms)
        except Exception as exc:  # one bad review never stops the run
            log.debug("review %s failed", review_id, exc_info=True)
            result.failure = f"{type(exc).__name__}: {exc}"
            return result
        if any(len(sentence) > LONG_SENTENCE_TOKENS for sentence in doc.sents):
            result.flags.append("long-sentence")
        if self.language.code == "en" and not _looks_english(doc):
            result.flags.append("not-english")
        result.row = {"review_id": review_id, **asdict(mask),
                      "core_words": list(terms.core_words)}
        return result


def _looks_english(doc) -> bool:
    words = [t for t in doc if t.is_alpha]
    if len(words) < LANGUAGE_CHECK_MIN_WORDS:
        return True
    ascii_words = sum(t.text.isascii() for t in words)
    stop = sum(t.is_stop for t in words)
    return ascii_words >= 0.7 * len(words) and stop >= ENGLISH_STOP_SHARE * len(words)
