"""Core words of product names, and the rules of the built-in English resolver."""

from __future__ import annotations

from probe_helpers import builder


def terms(name):
    return builder("en").product_terms([name])[0]


def test_head_phrase_stops_at_specifications():
    from mrhp_prep.probe.core_words import head_phrase

    assert head_phrase("Dinnerware Set, 16 Piece, Service for 4") == "Dinnerware Set"
    assert head_phrase("Hand Mixer with Snap-On Case") == "Hand Mixer"
    assert head_phrase("Cast Iron Skillet 12 Inch Pre-Seasoned") == "Cast Iron Skillet"
    assert head_phrase("Vintage-Style 35mm Film Camera") == "Vintage-Style 35mm Film Camera"
    assert head_phrase("") == ""


def test_core_words_of_the_papers_examples():
    dinnerware = terms("Euro Ceramica Inc. Essential Collection Dinnerware Set, 16 Piece")
    assert dinnerware.core_words[:2] == ("set", "dinnerware")  # container + what it holds
    pins = terms("Twisty Pins for Upholstery, Slipcovers, and Bedskirts 50/pkg")
    assert pins.core_words == ("pin",)  # title case "Pins" lemmatised as a noun
    assert pins.plural


def test_container_of_object_and_plain_compounds():
    glasses = terms("Set of 4 Wine Glasses, Crystal Clear")
    assert {"glass", "glasses"} & set(glasses.core_words)
    bottle = terms("Stainless Steel Insulated Water Bottle with Straw Lid")
    assert bottle.core_words == ("bottle",)  # "water" names something else
    assert "water" in bottle.name_nouns


def test_name_without_a_noun_gives_no_core_words():
    for name in ["123-456", "!!!", "", "Awesome!!!"]:
        found = terms(name)
        assert found.core_words == ()


def test_pronouns_agree_in_number_and_skip_people():
    b = builder("en")
    product = b.product_terms(["Garden Hose 50 ft"])[0]
    text = "My husband loves it. They sent two hoses. I bought a nozzle and use it daily."
    row = next(b.build([("r", text, product)]))
    mentions = [text[s:e] for s, e in zip(row.row["mention_start"], row.row["mention_end"])]
    # the first "it" is not the husband but the product; "two hoses" names it (plural);
    # the last "it" is the nozzle: an object of its own sentence, in the same role
    assert mentions == ["it", "two hoses"]
    assert row.row["sentence_mask"] == [True, True, False]


def test_contrastive_modifier_is_another_object():
    b = builder("en")
    product = b.product_terms(["LED Desk Lamp"])[0]
    text = "My old lamp flickered. I threw it away."
    row = next(b.build([("r", text, product)])).row
    # "my old lamp" and "it" form a chain, but not the product's: the paper's fallback
    # (first cluster) marks them, never the core-word rule
    assert row["rule"] == "first-cluster"
    assert row["core_words"] == ["lamp"]
