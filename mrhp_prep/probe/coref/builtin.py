"""The built-in coreference resolver: offline, on the spaCy parse, tuned for product reviews.

English (`resolve_english`), in text order over noun chunks and third-person pronouns:

- A noun phrase whose head is a core word of the product name, or a generic product noun
  with a demonstrative or possessive determiner ("this item", "my purchase", "this one"),
  joins the *product chain*, and so does "this X"/"these X" with X any noun of the name's
  head phrase ("this grinder" for "Coffee Grinder Electric Burr"). A contrastive modifier
  ("my old lamp", "another one") or a third person's possessive ("her feather pillow") keeps
  it out: it names another object of the same kind.
- A definite noun phrase (the/this/that/these/those or a possessive) joins the most recent
  chain whose noun phrase has the same head lemma; any other noun phrase starts a chain.
- A pronoun (it, its, itself, this, they, them, their, theirs, themselves, these) picks the
  best chain among the mentions of the last three sentences (at most the 50 latest) that
  agree with it in number: same sentence 100, one back 60, two back 30, three back 10;
  +30 when the mention is a subject, +15 an object, +15 when it has the pronoun's role;
  the product chain gets +40, and stands as a candidate of score 55 by itself, because a
  review is about its product: a pronoun with no agreeing antecedent refers to the product.
  People and pets ("my husband", "our dog") are not antecedents of "it"; time words, prices
  and "review" are never antecedents; a pronoun is not coreferent with another argument of
  its own verb.
- "It" that is pleonastic ("it seems that", "it's been two weeks") is no mention.

The product chain is anchored to the product name, so it holds the name's core words even
when the review never names the product (`Cluster.names_product`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .registry import Cluster, register_backend

SINGULAR_PRONOUNS = frozenset({"it", "its", "itself", "this"})
PLURAL_PRONOUNS = frozenset({"they", "them", "their", "theirs", "themselves", "these"})
REFLEXIVES = frozenset({"itself", "themselves"})
DEFINITE_DETERMINERS = frozenset({"the", "this", "that", "these", "those", "my", "our",
                                  "your", "his", "her", "their", "its"})
PRODUCT_DETERMINERS = frozenset({"this", "these", "my", "our"})
GENERIC_PRODUCT_NOUNS = frozenset({"product", "item", "purchase", "unit", "thing", "one",
                                   "order"})
THE_GENERIC_PRODUCT_NOUNS = frozenset({"product", "item", "unit"})
CONTRASTIVE_MODIFIERS = frozenset({"old", "previous", "other", "another", "former", "prior",
                                   "last", "older", "different"})
# Another person's object of the same kind: "her feather pillow".
OTHER_OWNERS = frozenset({"his", "her"})
PERSON_NOUNS = frozenset("""
man woman men women husband wife son daughter kid child children mom mother dad father
brother sister family people person guy girl boy baby grandson granddaughter grandma
grandmother grandpa grandfather partner boyfriend girlfriend friend customer seller teacher
neighbor roommate toddler niece nephew aunt uncle coworker twin student parent wife
sibling cousin dentist doctor daughter-in-law son-in-law fiance fiancee spouse everyone
dog cat puppy kitten pet
""".split())
NON_REFERENTS = frozenset("""
time day week month year hour minute second night morning evening weekend review star
lot bit way reason fact price cost money shipping delivery value deal dollar buck
""".split())
SUBJECTS = frozenset({"nsubj", "nsubjpass", "csubj"})
OBJECTS = frozenset({"dobj", "attr", "dative", "oprd"})
ARGUMENTS = SUBJECTS | OBJECTS
RECENCY = (100, 60, 30, 10)
PRODUCT_BONUS = 40
PRODUCT_TOPIC_SCORE = 55
MAX_CANDIDATES = 50
PLEONASTIC_VERBS = frozenset({"seem", "appear", "happen", "rain", "snow"})
TIME_NOUNS = frozenset({"day", "week", "month", "year", "hour", "minute", "while", "time"})


@dataclass
class _Chain:
    plural_ok: set = field(default_factory=set)
    person: bool = False
    referent: bool = True
    is_product: bool = False
    mentions: list = field(default_factory=list)
    head_lemma: str = ""


@dataclass
class _Mention:
    start: int
    end: int
    sent: int
    role: str
    head: int  # token index of the syntactic head of the mention's root (binding check)
    chain: _Chain


def resolve_english(doc, terms, language) -> list[Cluster]:
    """Clusters of one parsed English review; see the module docstring."""
    core = frozenset(terms.core_words)
    product = _Chain(plural_ok={terms.plural}, is_product=True)
    chains: list[_Chain] = [product]
    recent: deque[_Mention] = deque(maxlen=MAX_CANDIDATES)
    sent_index = _sentence_index(doc)
    has_parse = doc.has_annotation("DEP")

    for kind, start, end in _mention_candidates(doc, has_parse):
        root = doc[end - 1] if kind == "np" else doc[start]
        if kind == "np":
            root = _chunk_root(doc, start, end)
            chain = _chain_for_phrase(doc, start, end, root, core, terms, product, chains,
                                      language)
        else:
            if _is_pleonastic(root):
                continue
            chain = _antecedent(root, recent, product, sent_index)
            if chain is None:
                continue
        mention = _Mention(start, end, sent_index[start], root.dep_, root.head.i, chain)
        chain.mentions.append(mention)
        recent.append(mention)

    clusters = []
    for chain in chains:
        if chain.is_product and chain.mentions:
            clusters.append(Cluster([(m.start, m.end) for m in chain.mentions], True))
        elif not chain.is_product and len(chain.mentions) >= 2:
            clusters.append(Cluster([(m.start, m.end) for m in chain.mentions]))
    clusters.sort(key=lambda c: c.first)
    return clusters


def _sentence_index(doc) -> list[int]:
    index = [0] * len(doc)
    for number, sentence in enumerate(doc.sents):
        for i in range(sentence.start, sentence.end):
            index[i] = number
    return index


def _mention_candidates(doc, has_parse):
    """("np"|"pron", start, end) in text order; pronouns first at the same position."""
    found = []
    if has_parse:
        for chunk in doc.noun_chunks:
            if chunk.root.pos_ in {"NOUN", "PROPN", "NUM"}:
                found.append((chunk.start, 1, "np", chunk.end))
    for token in doc:
        lower = token.lower_
        if lower in SINGULAR_PRONOUNS or lower in PLURAL_PRONOUNS:
            if token.dep_ == "det" or (token.pos_ and token.pos_ not in {"PRON", "DET"}):
                continue  # "this set": the noun phrase is the mention
            found.append((token.i, 0, "pron", token.i + 1))
    found.sort()
    return [(kind, start, end) for start, _, kind, end in found]


def _chunk_root(doc, start, end):
    for token in doc[start:end]:
        if token.head.i < start or token.head.i >= end or token.head.i == token.i:
            return token
    return doc[end - 1]


def _determiner(doc, start, root) -> str:
    for token in doc[start:root.i]:
        if token.dep_ in {"det", "poss"}:
            return token.lower_
    return ""


def _is_contrastive(token) -> bool:
    return any((child.dep_ in {"amod", "det"} and child.lower_ in CONTRASTIVE_MODIFIERS)
               or (child.dep_ == "poss" and child.lower_ in OTHER_OWNERS)
               for child in token.children)


def _chain_for_phrase(doc, start, end, root, core, terms, product, chains, language):
    lemma = language.noun_lemma(root.text) if root.pos_ in {"NOUN", "PROPN"} else root.lower_
    determiner = _determiner(doc, start, root)
    plural = root.tag_ in {"NNS", "NNPS"}
    if not _is_contrastive(root):
        if language.is_core(root, core):
            product.plural_ok.add(plural)
            return product
        if determiner in {"this", "these"} and lemma in terms.name_nouns:
            product.plural_ok.add(plural)
            return product
        if lemma in GENERIC_PRODUCT_NOUNS and (
                determiner in PRODUCT_DETERMINERS
                or (determiner == "the" and lemma in THE_GENERIC_PRODUCT_NOUNS)):
            product.plural_ok.add(plural)
            return product
    if determiner in DEFINITE_DETERMINERS:
        for chain in reversed(chains):
            if not chain.is_product and chain.head_lemma == lemma:
                return chain
    chain = _Chain(plural_ok={plural}, head_lemma=lemma,
                   person=lemma in PERSON_NOUNS,
                   referent=lemma not in NON_REFERENTS and root.pos_ != "NUM")
    chains.append(chain)
    return chain


def _is_pleonastic(token) -> bool:
    if token.lower_ != "it":
        return False
    if token.dep_ == "expl":
        return True
    head = token.head
    if token.dep_ in SUBJECTS and head.lemma_ in PLEONASTIC_VERBS:
        return True
    # "it's been two weeks"
    return (token.dep_ in SUBJECTS and head.lower_ == "been"
            and any(child.lemma_ in TIME_NOUNS for child in head.children))


def _antecedent(pronoun, recent, product, sent_index):
    lower = pronoun.lower_
    plural = lower in PLURAL_PRONOUNS
    reflexive = lower in REFLEXIVES
    here = sent_index[pronoun.i]
    scores: dict[int, tuple[float, int, _Chain]] = {}
    for mention in recent:
        chain = mention.chain
        distance = here - mention.sent
        if distance >= len(RECENCY) or mention.start >= pronoun.i or not chain.referent:
            continue
        if plural not in chain.plural_ok or (not plural and chain.person):
            continue
        if (not reflexive and mention.head == pronoun.head.i and mention.role in ARGUMENTS
                and pronoun.dep_ in ARGUMENTS):
            continue
        score = RECENCY[distance]
        score += 30 if mention.role in SUBJECTS else 15 if mention.role in OBJECTS else 0
        if mention.role == pronoun.dep_ or (mention.role in SUBJECTS and pronoun.dep_ in SUBJECTS):
            score += 15
        if chain.is_product:
            score += PRODUCT_BONUS
        best = scores.get(id(chain))
        if best is None or (score, mention.start) > best[:2]:
            scores[id(chain)] = (score, mention.start, chain)
    if plural in product.plural_ok:
        best = scores.get(id(product))
        if best is None or best[0] < PRODUCT_TOPIC_SCORE:
            scores[id(product)] = (PRODUCT_TOPIC_SCORE, -1, product)
    if not scores:
        return None
    return max(scores.values(), key=lambda item: item[:2])[2]


@register_backend("builtin")
class BuiltinBackend:
    """Offline rules on the spaCy parse (English) or on tokens and lemmas (Indonesian)."""

    needs_full_pipeline = False

    def prepare(self, nlp) -> None:
        return None

    def clusters(self, doc, terms, language) -> list[Cluster]:
        return language.resolve(doc, terms)
