"""The mask rules: which sentences of a review are marked, and which rule fired.

`paper` (SANCL's Algorithm 1, default):
  clusters = the backend's chains with at least two mentions (the built-in product chain
  counts its anchor in the product name as one); the gold cluster is the cluster holding the
  most mentions that name a core word (the product chain of the built-in resolver holds the
  core words by its anchor), the first such on a tie; when no cluster holds a core word, the
  first cluster (by first mention). Every sentence holding a gold mention is marked, and so
  is every sentence naming a core word directly. Rule fired: `coref` (gold cluster holds a
  core word), `first-cluster` (fallback), `core-word` (no cluster, a core word named),
  `none` (nothing marked: all zero).
  Algorithm 1 as printed keeps the *last* cluster holding a core word; with several such
  clusters the one with most core-word mentions is the better guess, and with the built-in
  resolver there is only one.

`sancl-code` (what SANCL's script does): only the first cluster; a sentence is marked when
  it holds one of its mentions or when its lower-cased text contains the lemma of the name's
  ROOT as a substring. Rule fired: `first-cluster` when the first cluster marked a sentence,
  else `core-word` when the substring did, else `none`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RULES = ("paper", "sancl-code")
RULE_LABELS = ("coref", "first-cluster", "core-word", "none")


@dataclass
class ProbeMask:
    """One review's mask. Offsets are characters into the review text.

    sentence_start, sentence_end: [num_sentences] int; sentence_mask: [num_sentences] bool;
    mention_start, mention_end: [num_gold_mentions] int; rule: one of RULE_LABELS.
    """

    sentence_start: list[int] = field(default_factory=list)
    sentence_end: list[int] = field(default_factory=list)
    sentence_mask: list[bool] = field(default_factory=list)
    mention_start: list[int] = field(default_factory=list)
    mention_end: list[int] = field(default_factory=list)
    rule: str = "none"


def _char_span(doc, start: int, end: int) -> tuple[int, int]:
    last = doc[end - 1]
    return doc[start].idx, last.idx + len(last.text)


def sentence_spans(doc) -> list[tuple[int, int]]:
    """Token spans of the sentences that hold at least one non-space token."""
    spans = []
    for sentence in doc.sents:
        tokens = [t for t in sentence if not t.is_space]
        if tokens:
            spans.append((tokens[0].i, tokens[-1].i + 1))
    return spans


def _sentence_of_token(spans) -> dict[int, int]:
    index = {}
    for number, (start, end) in enumerate(spans):
        for i in range(start, end):
            index[i] = number
    return index


def _finish(doc, spans, marked: set[int], gold_mentions, rule: str) -> ProbeMask:
    mask = ProbeMask(rule=rule if marked else "none")
    for number, (start, end) in enumerate(spans):
        char_start, char_end = _char_span(doc, start, end)
        mask.sentence_start.append(char_start)
        mask.sentence_end.append(char_end)
        mask.sentence_mask.append(number in marked)
    for start, end in sorted(gold_mentions):
        char_start, char_end = _char_span(doc, start, end)
        mask.mention_start.append(char_start)
        mask.mention_end.append(char_end)
    return mask


def _sentences_of_mentions(mentions, token_sentence) -> set[int]:
    marked = set()
    for start, end in mentions:
        for i in range(start, end):
            if i in token_sentence:
                marked.add(token_sentence[i])
                break
    return marked


def paper_mask(doc, clusters, terms, language) -> ProbeMask:
    """SANCL's Algorithm 1 (see the module docstring)."""
    spans = sentence_spans(doc)
    token_sentence = _sentence_of_token(spans)
    core = frozenset(terms.core_words)
    core_tokens = {t.i for t in doc if language.is_core(t, core)}
    clusters = [c for c in clusters if c.size >= 2]

    def core_mentions(cluster) -> int:
        named = sum(any(i in core_tokens for i in range(s, e)) for s, e in cluster.mentions)
        return named + (1 if cluster.names_product and core else 0)

    gold, rule = None, "none"
    best = 0
    for cluster in clusters:
        count = core_mentions(cluster)
        if count > best:
            gold, best, rule = cluster, count, "coref"
    if gold is None and clusters:
        gold, rule = clusters[0], "first-cluster"
    marked = _sentences_of_mentions(gold.mentions, token_sentence) if gold else set()
    direct = {token_sentence[i] for i in core_tokens if i in token_sentence}
    if gold is None and direct:
        rule = "core-word"
    marked |= direct
    return _finish(doc, spans, marked, gold.mentions if gold else [], rule)


def sancl_code_mask(doc, clusters, terms, language) -> ProbeMask:
    """SANCL's script: first cluster only, root-lemma substring match."""
    spans = sentence_spans(doc)
    token_sentence = _sentence_of_token(spans)
    clusters = [c for c in clusters if c.size >= 2]
    first = clusters[0] if clusters else None
    marked = _sentences_of_mentions(first.mentions, token_sentence) if first else set()
    rule = "first-cluster" if marked else "none"
    root = terms.root_lemma.lower()
    if root:
        text = doc.text.lower()
        for number, (start, end) in enumerate(spans):
            char_start, char_end = _char_span(doc, start, end)
            if root in text[char_start:char_end] and number not in marked:
                marked.add(number)
                if rule == "none":
                    rule = "core-word"
    return _finish(doc, spans, marked, first.mentions if first else [], rule)


MASK_RULES = {"paper": paper_mask, "sancl-code": sancl_code_mask}
