"""Indonesian (Lazada) rules: `spacy.blank("id")`, the sentencizer and the lookup lemmatizer.

There is no Indonesian tagger or parser among the pipelines that install offline, so the
rules work on words:

*Normal form* of a word: lower case; a final "-nya" (its/the) is cut when at least three
letters remain and the word is not an adverb ("akhirnya", "sepertinya") or a stop word; then
the lookup lemmatizer's lemma, except for words ending in the noun suffix "-an", which keep
their form because the table maps derived nouns to verb roots ("pakaian" -> "pakai").

*Core word* (the head-noun heuristic): Indonesian noun phrases are head-first, so the head
noun of "Sepatu Sneakers Pria Casual Kanvas" is its first word. Leading bracketed tags
("[PROMO]") are dropped, the name is cut at its first specification separator as in English,
and the first word of letters that is neither a stop word nor a marketing word ("promo",
"original", "murah", "termurah", "ready", ...) is the head; its normal form is the one core
word.

*Coreference*, in text order:
- a word whose normal form is the core word, or a generic product noun ("barang", "produk",
  "item", "pesanan"), with a following "ini"/"itu", joins the product chain;
- "X ini" / "X itu" with another noun X starts or joins the chain of X;
- "-nya" on a noun ("ukurannya", "bahannya", or "baterai nya" written apart) refers to the
  product ("its size"), unless the noun is a service or person word ("kurirnya",
  "penjualnya"), which forms that noun's own chain;
- "ini" standing alone refers to the product; "itu" standing alone is left out (it mostly
  points at what was just said: "karena itu");
- "dia"/"ia"/"beliau" refer to the latest person word of the last three sentences ("anak",
  "penjual", ...), else to the product; "mereka" only to people.

Weaker than English: no parser, so no grammatical roles, no number agreement and no
definite noun phrases other than "ini"/"itu"/"-nya"; one core word only, so a head such as
"jam" (watch, also "hour") matches its other sense; "-nya" also marks sentences about the
product's parts; multi-word names whose first word is a brand miss the real head.
"""

from __future__ import annotations

import re

from ..errors import InputError
from .coref import Cluster
from .core_words import ProductTerms, head_phrase

MARKETING_WORDS = frozenset("""
promo murah termurah original ori asli new baru best seller bestseller grosir ready stock
stok free gratis diskon sale hot terlaris import premium cod bisa produk promo flash
limited edition spesial special termurah paket cuci gudang official store
""".split())
GENERIC_PRODUCT_NOUNS = frozenset({"barang", "produk", "item", "pesanan", "produknya"})
NYA_ADVERBS = frozenset("""
sepertinya kayaknya akhirnya sebenarnya biasanya pokoknya katanya sayangnya untungnya
intinya misalnya semuanya selanjutnya sebelumnya setelahnya tampaknya nampaknya harusnya
seharusnya mestinya pastinya jujurnya awalnya soalnya makanya lainnya satunya sisanya
sekalinya kebetulannya nya
""".split())
SERVICE_WORDS = frozenset("""
kurir penjual seller toko pengiriman pengemasan packing admin pelayanan respon ekspedisi
driver ojek cs olshop lazada gudang
""".split())
PERSON_WORDS = frozenset("""
anak istri suami ibu bapak ayah adik kakak teman pacar mama papa nenek kakek keluarga
penjual seller kurir admin orang saudara bayi cucu
""".split())
DEMONSTRATIVES = frozenset({"ini", "itu"})
SINGULAR_PERSON_PRONOUNS = frozenset({"dia", "ia", "beliau"})
_BRACKETED = re.compile(r"^\s*(\[[^\]]*\]|\([^)]*\)|【[^】]*】)\s*")


def load_indonesian_pipeline():
    import spacy

    nlp = spacy.blank("id")
    nlp.add_pipe("sentencizer")
    nlp.add_pipe("lemmatizer", config={"mode": "lookup"})
    try:
        nlp.initialize()
    except Exception as exc:  # spaCy raises ValueError naming the missing lookups table
        raise InputError(f"the Indonesian lookup lemmatizer cannot load its table: {exc}",
                         field="--language",
                         hint="pip install spacy-lookups-data") from exc
    return nlp


class Indonesian:
    """Indonesian rules over tokens and lemmas (see the module docstring)."""

    code = "id"

    def __init__(self, nlp):
        from spacy.lang.id.stop_words import STOP_WORDS

        self.nlp = nlp
        self.stop_words = frozenset(STOP_WORDS)
        table = nlp.get_pipe("lemmatizer").lookups.get_table("lemma_lookup")
        self._lemmas = table
        self._cache: dict[str, tuple[str, bool]] = {}

    @property
    def model_name(self) -> str:
        return "blank:id+sentencizer+lookup-lemmatizer"

    def name_text(self, name: str) -> str:
        name = name or ""
        while True:
            stripped = _BRACKETED.sub("", name, count=1)
            if stripped == name:
                break
            name = stripped
        return head_phrase(name)

    def normal(self, word: str) -> tuple[str, bool]:
        """(normal form, whether a "-nya" was cut)."""
        found = self._cache.get(word)
        if found is not None:
            return found
        lower = word.lower()
        stem, cut = lower, False
        if (lower.endswith("nya") and len(lower) >= 6 and lower not in NYA_ADVERBS
                and lower not in self.stop_words):
            stem, cut = lower[:-3], True
        lemma = stem
        if not stem.endswith("an"):
            lemma = str(self._lemmas.get(stem, stem)).lower()
        self._cache[word] = (lemma, cut)
        return lemma, cut

    def noun_lemma(self, word: str) -> str:
        return self.normal(word)[0]

    def _is_content_word(self, token) -> bool:
        lower = token.lower_
        return (token.is_alpha and len(lower) >= 2 and lower not in self.stop_words
                and lower not in DEMONSTRATIVES)

    def product_terms(self, name_doc) -> ProductTerms:
        for token in name_doc:
            lower = token.lower_
            if not self._is_content_word(token) or lower in MARKETING_WORDS:
                continue
            lemma = self.normal(token.text)[0]
            return ProductTerms((lemma,), lemma, False)
        return ProductTerms()

    def is_core(self, token, core: frozenset) -> bool:
        return bool(core) and token.is_alpha and self.normal(token.text)[0] in core

    def resolve(self, doc, terms) -> list[Cluster]:
        """Clusters of one Indonesian review; see the module docstring."""
        core = frozenset(terms.core_words)
        product: list[tuple[int, int]] = []
        chains: dict[str, list[tuple[int, int]]] = {}
        people: list[tuple[int, str]] = []  # (sentence, word) of person words seen
        sentence_of = {}
        for number, sentence in enumerate(doc.sents):
            for i in range(sentence.start, sentence.end):
                sentence_of[i] = number
        tokens = list(doc)
        for token in tokens:
            i, lower = token.i, token.lower_
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            prev = tokens[i - 1] if i > 0 else None
            span_end = i + 2 if nxt is not None and nxt.lower_ in DEMONSTRATIVES else i + 1
            if lower in DEMONSTRATIVES:
                if prev is not None and self._is_content_word(prev):
                    continue  # "tas ini": the noun before it is the mention
                if lower == "ini":
                    product.append((i, i + 1))
                continue
            if lower in SINGULAR_PERSON_PRONOUNS or lower == "mereka":
                here = sentence_of[i]
                recent = [word for sent, word in people if here - sent < 3]
                if recent:
                    chains.setdefault(recent[-1], []).append((i, i + 1))
                elif lower != "mereka":
                    product.append((i, i + 1))
                continue
            if lower == "nya" and prev is not None and self._is_content_word(prev):
                continue  # "baterai nya": handled with the word before it
            if not self._is_content_word(token):
                continue
            stem, cut = self.normal(token.text)
            if not cut and nxt is not None and nxt.lower_ == "nya":
                cut, span_end = True, i + 2
            if stem in PERSON_WORDS:
                people.append((sentence_of[i], stem))
            if stem in core or stem in GENERIC_PRODUCT_NOUNS or lower in GENERIC_PRODUCT_NOUNS:
                product.append((i, span_end))
            elif stem in SERVICE_WORDS or stem in PERSON_WORDS:
                chains.setdefault(stem, []).append((i, span_end))
            elif cut:
                product.append((i, span_end))
            elif span_end == i + 2:
                chains.setdefault(stem, []).append((i, span_end))
        clusters = [Cluster(sorted(set(m))) for m in chains.values() if len(set(m)) >= 2]
        if product:
            clusters.append(Cluster(sorted(set(product)), names_product=True))
        clusters.sort(key=lambda c: c.first)
        return clusters
