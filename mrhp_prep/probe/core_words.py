"""Core words of a product name: the lemmas of its head noun and the word naming its kind.

English (a pipeline with a tagger and a parser), precisely:

1. The *head phrase* is the name up to its first `,`, `(`, `[`, `|`, `;`, ` - `, or the
   words ` with `, ` for `, ` in `, ` from `, ` by `, and before its first quantity word
   ("12", "1.7L", "10000mAh", "50x60") after the first two words: product names put
   specifications and accessories there ("Dinnerware Set, 16 Piece, Service for 4",
   "Cast Iron Skillet 12 Inch Pre-Seasoned", "Hand Mixer with Snap-On Case").
2. The head phrase is parsed; its first sentence's ROOT is the starting point. The *head
   noun* is the ROOT when it is a NOUN or PROPN made of letters; otherwise (a verb, a model
   number like "WH1000XM3", a number, or a word the lemmatizer's lexicon knows only as an
   adjective, like "Clear" or "Cozy" tagged PROPN in title case) the NOUN/PROPN made of
   letters nearest to the ROOT in the ROOT's subtree that is no such adjective, preferring
   nouns that are not themselves `compound` modifiers, and the left one on a tie.
3. The first core word is the lemma of the head noun.
4. When the head noun is a container word ("set", "pack", "pair", "kit", ...), the words
   that say what it contains are core words too: its nearest `compound` child that is a
   NOUN/PROPN made of letters ("Dinnerware" Set, "Knife" Set) and the object of its `of`
   phrase ("Set of 4 Wine Glasses"). Other compounds are not core words: they mostly name
   something else the reviews talk about ("Water" Bottle, "Laptop" Stand, "Dog" Leash).
5. Lemmas are lower-cased and taken as nouns, so title case does not hide plurals
   ("Pins" -> "pin").

A pipeline without a parser falls back to the last noun (with a tagger) or the last word of
letters (without) of the head phrase, English noun phrases being head-final. A name with no
noun gives no core words; such products are counted in the stage's summary.

SANCL's own script used one word: the ROOT's lemma (`root_lemma`, for `--rule sancl-code`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NOUNS = frozenset({"NOUN", "PROPN"})
CONTAINER_NOUNS = frozenset({
    "set", "pack", "package", "pair", "kit", "bundle", "lot", "collection", "assortment",
    "piece", "variety", "pk", "pcs"})
_HEAD_PHRASE_END = re.compile(r"\s[-–—|]\s|[,(\[|;]|\s(?:with|for|in|from|by)\s", re.I)
# A quantity or size: "12", "1.7L", "10000mAh", "50x60", "6ft", "2.5".
_MEASURE = re.compile(r"^\d[\d.,/x×]*[a-z]{0,3}$", re.I)


@dataclass(frozen=True)
class ProductTerms:
    """What the mask rules need to know about one product's name.

    core_words: lower-cased lemmas ("set", "dinnerware"); empty when the name has no noun.
    root_lemma: the lower-cased lemma of the name's ROOT token (SANCL's core word).
    plural: whether the head noun is plural ("Twisty Pins"), for pronoun agreement.
    name_nouns: lemmas of every noun of the head phrase; the built-in resolver takes "this X"
    and "these X" with such an X for the product even when X is not the head ("this
    grinder" for "Coffee Grinder Electric Burr").
    """

    core_words: tuple[str, ...] = ()
    root_lemma: str = ""
    plural: bool = False
    name_nouns: tuple[str, ...] = ()

    def to_json(self) -> list:
        return [list(self.core_words), self.root_lemma, self.plural, list(self.name_nouns)]

    @classmethod
    def from_json(cls, value: list) -> "ProductTerms":
        return cls(tuple(value[0]), value[1], bool(value[2]), tuple(value[3]))


def head_phrase(name: str) -> str:
    """The name up to its first specification separator or quantity (the whole name when
    that leaves nothing)."""
    name = (name or "").strip()
    match = _HEAD_PHRASE_END.search(name)
    head = name[:match.start()].strip() if match else name
    words = head.split()
    for position, word in enumerate(words[2:], start=2):
        if _MEASURE.match(word) and words[position - 1].lower() != "of":  # "Set of 4 ..."
            head = " ".join(words[:position])
            break
    return head or name


def is_word(token) -> bool:
    """Letters only (hyphen or apostrophe inside allowed), at least two of them."""
    text = token.text.replace("-", "").replace("'", "")
    return len(text) >= 2 and text.isalpha()


class NounLemmatizer:
    """Lemmatises single words as nouns with the pipeline's own lemmatizer.

    Product names are title case, which makes taggers call their nouns PROPN, whose lemma is
    the word itself; "Pins" must become "pin" to match "pins" and "pin" in a review.
    """

    def __init__(self, nlp):
        from spacy.tokens import Doc

        self._doc_class = Doc
        self._vocab = nlp.vocab
        self._lemmatizer = None
        self._nouns: frozenset = frozenset()
        self._adjectives: frozenset = frozenset()
        if "lemmatizer" in nlp.pipe_names:
            component = nlp.get_pipe("lemmatizer")
            if getattr(component, "mode", None) == "rule":
                self._lemmatizer = component
                index = component.lookups.get_table("lemma_index", {})
                self._nouns = frozenset(index.get("noun", ()))
                self._adjectives = frozenset(index.get("adj", ())) - self._nouns
        self._cache: dict[str, str] = {}

    def is_adjective(self, word: str) -> bool:
        """A word the lexicon knows only as an adjective ("Clear", "Cozy", "Ionic"): title
        case makes taggers call such trailing descriptors proper nouns."""
        return word.lower() in self._adjectives

    def __call__(self, word: str) -> str:
        word = word.lower()
        lemma = self._cache.get(word)
        if lemma is None:
            lemma = word
            # A known base form stays as it is ("glass", not "glas").
            if self._lemmatizer is not None and word not in self._nouns:
                doc = self._doc_class(self._vocab, words=[word], pos=["NOUN"])
                lemma = (self._lemmatizer.rule_lemmatize(doc[0]) or [word])[0].lower()
            self._cache[word] = lemma
        return lemma


def english_terms(name_doc, noun_lemma: NounLemmatizer) -> ProductTerms:
    """Core words of a parsed head phrase (see the module docstring for the rule)."""
    tokens = list(name_doc)
    if not tokens:
        return ProductTerms()
    sentence = next(iter(name_doc.sents)) if name_doc.has_annotation("SENT_START") or \
        name_doc.has_annotation("DEP") else name_doc[:]
    root = sentence.root
    root_lemma = (root.lemma_ or root.text).lower()
    name_nouns = tuple(dict.fromkeys(noun_lemma(t.text) for t in tokens if _is_noun_word(t)))
    if name_doc.has_annotation("DEP"):
        head = _head_noun_from_parse(root, noun_lemma)
    else:
        head = _head_noun_without_parse(name_doc)
    if head is None:
        return ProductTerms((), root_lemma, False, name_nouns)
    words = [head]
    if noun_lemma(head.text) in CONTAINER_NOUNS:
        for inner in (_nearest_compound(head), _of_object(head)):
            if inner is not None:
                words.append(inner)
    core = []
    for token in words:
        lemma = noun_lemma(token.text)
        if lemma not in core:
            core.append(lemma)
    plural = head.tag_ in {"NNS", "NNPS"} or noun_lemma(head.text) != head.text.lower()
    return ProductTerms(tuple(core), root_lemma, plural, name_nouns)


def _is_noun_word(token) -> bool:
    return token.pos_ in NOUNS and is_word(token) and not token.is_stop


def _head_noun_from_parse(root, noun_lemma):
    if _is_noun_word(root) and not noun_lemma.is_adjective(root.text):
        return root
    nouns = [t for t in root.subtree if _is_noun_word(t) and not noun_lemma.is_adjective(t.text)]
    # Prefer nouns that head their own phrase: in "Set of 4 Wine Glasses" (ROOT "Set"
    # parsed as a verb) the head is "Glasses", not its compound "Wine".
    candidates = [t for t in nouns if t.dep_ != "compound"] or nouns
    if not candidates:
        return None
    return min(candidates, key=lambda t: (abs(t.i - root.i), t.i > root.i))


def _head_noun_without_parse(doc):
    tagged = doc.has_annotation("TAG") or doc.has_annotation("POS")
    prepositions = {"for", "with", "of", "in", "on", "to", "and", "by"}
    words = []
    for token in doc:
        if token.lower_ in prepositions and words:
            break
        words.append(token)
    for token in reversed(words):
        if (tagged and _is_noun_word(token)) or (not tagged and is_word(token)
                                                  and not token.is_stop):
            return token
    return None


def _nearest_compound(head):
    compounds = [c for c in head.children if c.dep_ == "compound" and _is_noun_word(c)]
    if not compounds:
        return None
    return min(compounds, key=lambda t: abs(t.i - head.i))


def _of_object(head):
    for child in head.children:
        if child.dep_ == "prep" and child.lower_ == "of":
            objects = [t for t in child.subtree if _is_noun_word(t) and t.dep_ == "pobj"]
            if objects:
                return objects[0]
    # A parser that hangs "of" off the container's head phrase differently: the first noun
    # after "of" in the phrase.
    doc = head.doc
    if head.i + 1 < len(doc) and doc[head.i + 1].lower_ == "of":
        for token in doc[head.i + 2:]:
            if _is_noun_word(token):
                return token
    return None
