"""The `paper` and `sancl-code` rules on given clusters, on real parsed reviews."""

from __future__ import annotations

from mrhp_prep.probe.coref import Cluster
from mrhp_prep.probe.core_words import ProductTerms
from mrhp_prep.probe.masks import paper_mask, sancl_code_mask

from probe_helpers import builder

TEXT = "My friend recommended it. The kettle boils fast. She was right. I love the kettle."


def parsed():
    b = builder("en")
    return b.nlp(TEXT), b.language


def span_of(doc, word, nth=0):
    found = [t.i for t in doc if t.lower_ == word]
    return (found[nth], found[nth] + 1)


def test_paper_rule_prefers_the_cluster_with_a_core_word():
    doc, language = parsed()
    kettle = ProductTerms(("kettle",), "kettle")
    friend = Cluster([span_of(doc, "friend"), span_of(doc, "she")])
    product = Cluster([span_of(doc, "it"), span_of(doc, "kettle")])
    mask = paper_mask(doc, [friend, product], kettle, language)
    assert mask.rule == "coref"
    assert mask.sentence_mask == [True, True, False, True]  # 4th: core word named directly
    assert [TEXT[s:e] for s, e in zip(mask.mention_start, mask.mention_end)] == ["it", "kettle"]


def test_paper_rule_falls_back_to_the_first_cluster_then_core_words():
    doc, language = parsed()
    toaster = ProductTerms(("toaster",), "toaster")
    friend = Cluster([span_of(doc, "friend"), span_of(doc, "she")])
    assert paper_mask(doc, [friend], toaster, language).rule == "first-cluster"
    assert paper_mask(doc, [friend], toaster, language).sentence_mask == [True, False, True,
                                                                          False]
    kettle = ProductTerms(("kettle",), "kettle")
    only_words = paper_mask(doc, [], kettle, language)
    assert only_words.rule == "core-word"
    assert only_words.sentence_mask == [False, True, False, True]
    nothing = paper_mask(doc, [Cluster([span_of(doc, "friend")])], toaster, language)
    assert nothing.rule == "none" and not any(nothing.sentence_mask)  # singletons ignored


def test_sentence_offsets_are_character_offsets_into_the_text():
    doc, language = parsed()
    mask = paper_mask(doc, [], ProductTerms(("kettle",), "kettle"), language)
    sentences = [TEXT[s:e] for s, e in zip(mask.sentence_start, mask.sentence_end)]
    assert sentences == ["My friend recommended it.", "The kettle boils fast.",
                         "She was right.", "I love the kettle."]


def test_sancl_code_uses_only_the_first_cluster_and_substrings():
    doc, language = parsed()
    terms = ProductTerms(("kettle",), "kettl")  # SANCL matched the root lemma as a substring
    friend = Cluster([span_of(doc, "friend"), span_of(doc, "she")])
    product = Cluster([span_of(doc, "it"), span_of(doc, "kettle")])
    mask = sancl_code_mask(doc, [friend, product], terms, language)
    assert mask.rule == "first-cluster"
    assert mask.sentence_mask == [True, True, True, True]
    assert [TEXT[s:e] for s, e in zip(mask.mention_start, mask.mention_end)] == ["friend", "She"]
    no_root = sancl_code_mask(doc, [], ProductTerms((), ""), language)
    assert no_root.rule == "none"
