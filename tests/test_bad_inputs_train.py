"""A corpus of bad inputs for train / evaluate / predict, walked through the real command line.

Every case must end without a traceback, with a non-zero exit code (or a listed skip), and
without a finished run folder holding results made from bad data. Each case names the words
the message must contain, so an error that stops for the wrong reason fails too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from bad_input_table import alias_bomb, assert_plain_numbers, deep, flow_alias_bomb
from bad_train_inputs import (GOOD_ROWS, copy_store, empty_region_rois, evaluate_args,
                              finished_train_runs, jsonl, nan_rois, one_label_per_product,
                              partial_probes, partial_rois, renamed_text_store,
                              resume_after_the_manifest_changed, rewrite_shard, train_args)
from feature_stores import write_text_store
from mrhp_prep.cli import cli
from mrhp_prep.data.manifest import Manifest
from stage_edits import write_table
from train_fixtures import one_torch_thread, sample_stores  # noqa: F401


# -- the corpus ---------------------------------------------------------------------------------
@dataclass
class Case:
    """One bad input: `build(stores, tmp)` returns the command-line arguments after the
    command (the stores are those of the bundled sample); the run must exit with `exit_code`
    and its output contain every string of `words`."""

    name: str
    build: Callable[[dict, Path], list[str]]
    exit_code: int
    words: tuple[str, ...]
    listed_skip: bool = False      # exit 0 is right: the bad part is listed, not used
    notes: str = field(default="")


def inf_text_features(stores, tmp):
    manifest = Manifest(stores["manifest"])
    train_products = manifest.products[manifest.products["split"] == "train"]
    poisoned = set(train_products["text"])

    def encoder(text):
        tokens = [(m.group(), m.start(), m.end()) for m in __import__("re").finditer(r"\w+", text)]
        values = np.random.default_rng(len(text)).normal(size=(len(tokens), 8))
        if text in poisoned:
            values[:] = np.inf
        return tokens, values

    text = write_text_store(tmp / "text", stores["manifest"], mode="features", dim=8,
                            encoder=encoder)
    return train_args(stores, tmp, text=text)


def nan_vectors(stores, tmp):
    text = copy_store(stores["text"], tmp / "text")
    vectors = np.load(text / "vectors-review.npy")
    vectors[5] = np.nan
    np.save(text / "vectors-review.npy", vectors)
    return train_args(stores, tmp, text=text)


def damaged_shard(column: str, change: Callable[[list], list]):
    def build(stores, tmp):
        text = copy_store(stores["text"], tmp / "text")
        rewrite_shard(text / "review-00001.arrow", column, change)
        return train_args(stores, tmp, text=text)
    return build


def nan_label(stores, tmp):
    import pandas as pd

    manifest = copy_store(stores["manifest"], tmp / "manifest")
    reviews = pd.read_parquet(manifest / "reviews.parquet")
    reviews["label"] = reviews["label"].astype("float64")
    reviews.loc[reviews["split"] == "dev", "label"] = np.nan
    write_table(manifest, "reviews", reviews)
    return train_args(stores, tmp, manifest=manifest)


def foreign_text(stores, tmp):
    """A text store of the same manifest with every review id renamed (other data)."""
    return train_args(stores, tmp, text=renamed_text_store(stores, tmp))


def truncated(store: str, name: str):
    """A copy of the store with file `name` cut to half its size."""
    def build(stores, tmp):
        folder = copy_store(stores[store], tmp / store)
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:len(data) // 2])
        return train_args(stores, tmp, **{store: folder})
    return build


def config_file(text: str):
    def build(stores, tmp):
        (tmp / "mine.yaml").write_text(text)
        return train_args(stores, tmp) + ["--config", str(tmp / "mine.yaml")]
    return build


def mmss_config_file(text: str):
    def build(stores, tmp):
        (tmp / "mine.yaml").write_text(text)
        return train_args(stores, tmp) + ["--model", "mmss", "--config", str(tmp / "mine.yaml")]
    return build


def with_settings(*settings):
    def build(stores, tmp):
        args = train_args(stores, tmp)
        for setting in settings:
            args += ["--set", setting]
        return args
    return build


def resume_with(*extra):
    def build(stores, tmp):
        run = tmp / "run"
        run.mkdir()
        inputs = {k: str(Path(stores[k]).resolve()) for k in ("manifest", "rois", "text", "probes")}
        (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "sancl"},
                                                         "inputs": inputs}))
        return ["train", "--resume", str(run), "--cache-dir", str(tmp / "cache"), *extra]
    return build


def predictions_file(suffix: str, text: str):
    def build(stores, tmp):
        path = tmp / f"predictions{suffix}"
        path.write_text(text)
        return ["evaluate", str(path)]
    return build


CASES = [
    Case("rois.h5 NaN in the train products' images", nan_rois("train"), 3,
         ("NaN or inf", "epoch 1, step 1", "rois.h5", "B00SAMP00", "'features'")),
    Case("rois.h5 NaN in a dev product's image", nan_rois("dev"), 3,
         ("scoring the dev split", "NaN or inf", "rois.h5", "B00SAMP005/pic_0.jpg")),
    Case("inf in frozen text features", inf_text_features, 3,
         ("NaN or inf", "epoch 1", "product-0000", "'features'")),
    Case("NaN static vector", nan_vectors, 3, ("vectors-review.npy", "row 5", "NaN or inf")),
    Case("token id outside the vocabulary", damaged_shard(
        "token_ids", lambda ids: [10**6] + ids[1:]), 3,
         ("review-00001.arrow", "row 0", "token_ids", "outside the vocabulary")),
    Case("negative token id", damaged_shard("token_ids", lambda ids: [-3] + ids[1:]), 3,
         ("review-00001.arrow", "token_ids")),
    Case("token offset beyond the text", damaged_shard(
        "token_end", lambda ends: ends[:-1] + [10**6]), 3,
         ("review-00001.arrow", "row 0", "token_start/token_end", "outside the text")),
    Case("negative token start (only [CLS]/[SEP] may have -1, -1)", damaged_shard(
        "token_start", lambda starts: [-1] + starts[1:]), 3,
         ("review-00001.arrow", "row 0", "token_start/token_end", "outside the text")),
    Case("fewer offsets than tokens", damaged_shard("token_start", lambda s: s[:-1]), 3,
         ("review-00001.arrow", "row 0", "token_start", "offsets for")),
    Case("one token end missing", damaged_shard("token_end", lambda e: e[:-1]), 3,
         ("review-00001.arrow", "token_end", "offsets for")),
    Case("NaN labels in the manifest", nan_label, 3,
         ("reviews.parquet", "split dev are NaN or inf", "'label'")),
    Case("probe store of half the reviews", partial_probes, 3,
         ("probes store covers", "missing", "--allow-partial")),
    Case("text store of other data", foreign_text, 3,
         ("text store covers 0 of", "--allow-partial")),
    Case("RoI store without the review images", partial_rois, 3,
         ("rois store covers", "images", "--allow-partial")),
    Case("rois.h5 cut in half", truncated("rois", "rois.h5"), 3,
         ("rois.h5", "cannot read the RoI store")),
    Case("text shard cut in half", truncated("text", "review-00000.arrow"), 3,
         ("review-00000.arrow", "cannot read the Arrow shard")),
    Case("config file with a word for the learning rate", config_file("train:\n  lr: fast\n"),
         3, ("mine.yaml", "train.lr", "a number")),
    Case("config file with a negative batch size", config_file("train: {batch_size: -4}\n"),
         3, ("train.batch_size", ">= 1")),
    Case("config file nested 5000 levels deep", config_file(f"train: {deep()}\n"), 3,
         ("mine.yaml", "nested deeper than 64 levels")),
    Case("config file with an alias bomb", config_file(alias_bomb()), 3,
         ("mine.yaml", "expand it to more than")),
    Case("config file giving a key twice", config_file("train:\n  lr: 0.1\n  lr: 0.2\n"), 3,
         ("mine.yaml", "'lr' is given twice (line 2 and line 3)")),
    Case("config file with lists inside a list setting",
         mmss_config_file("model:\n  subtasks: [[ptrt, pvrv], rtrv]\n"), 3,
         ("mine.yaml", "model.subtasks", "a list of distinct names")),
    Case("--set nested 5000 levels deep", with_settings(f"model.kappa={deep()}"), 3,
         ("--set model.kappa", "nested deeper than 64 levels")),
    Case("--set with an alias bomb", with_settings(f"model.kappa={flow_alias_bomb()}"), 3,
         ("--set model.kappa", "expand it to more than")),
    Case("negative learning rate", with_settings("train.lr=-1"), 3, ("train.lr", ">= 0")),
    Case("kappa not a number", with_settings("model.kappa=abc"), 3,
         ("model.kappa", "a number", "'abc'")),
    Case("fractional epochs", with_settings("train.epochs=2.5"), 3,
         ("train.epochs", "an integer")),
    Case("NaN learning rate", with_settings("train.lr=nan"), 3, ("train.lr", "finite")),
    Case("flag that is not a flag", with_settings("sampling.weighted=maybe"), 3,
         ("sampling.weighted", "true or false")),
    Case("dropout of 1", with_settings("model.embedding_dropout=1"), 3,
         ("model.embedding_dropout", "< 1")),
    Case("diverging learning rate", with_settings("train.lr=1e30", "train.grad_clip=0"), 3,
         ("non-finite loss", "Likely source")),
    Case("resume with another model", resume_with("--model", "mcl"), 2,
         ("--model mcl", "the run trains sancl")),
    Case("resume with other probes", resume_with("--probes", "."), 2, ("--probes",)),
    Case("resume with --set", resume_with("--set", "train.lr=1"), 2, ("--set",)),
    Case("resume with --force", resume_with("--force"), 2, ("--force",)),
    Case("resume with --protocol", resume_with("--protocol", "released"), 2, ("--protocol",)),
    Case("evaluate: repeated review id", predictions_file(
        ".jsonl", jsonl(GOOD_ROWS + [GOOD_ROWS[1]])), 3, ("review_id", "'R1'", "more than once")),
    Case("evaluate: null product id", predictions_file(
        ".jsonl", jsonl(GOOD_ROWS + [{**GOOD_ROWS[0], "review_id": "R9", "product_id": None}])),
         3, ("product_id", "row 4")),
    Case("evaluate: header-only CSV", predictions_file(
        ".csv", "product_id,review_id,label,score\n"), 3, ("no rows",)),
    Case("evaluate: empty JSON lines", predictions_file(".jsonl", ""), 3, ("predictions",)),
    Case("evaluate: inf score", predictions_file(
        ".csv", "product_id,review_id,label,score\nP1,R1,1,inf\nP1,R2,0,0.5\n"), 3,
         ("score", "finite")),
    Case("evaluate: NaN score", predictions_file(
        ".jsonl", jsonl(GOOD_ROWS).replace("\"score\": 0.1", "\"score\": NaN", 1)), 3,
         ("score", "row 1", "empty or NaN")),
    Case("evaluate: empty score cell", predictions_file(
        ".csv", "product_id,review_id,label,score\nP1,R1,1,\nP1,R2,0,0.5\n"), 3,
         ("row 0", "'score'", "empty or NaN")),
    Case("rois.h5 storing the train reviews' images with no region", empty_region_rois, 3,
         ("rois store covers", "stored with no region", "--allow-partial")),
    Case("every train product's reviews share one label", one_label_per_product, 3,
         ("reviews.parquet", "--labels graded", "labels seen: 4", "--labels raw",
          "nothing to compare")),
    Case("resume after the manifest was ingested again", resume_after_the_manifest_changed, 3,
         ("cannot resume", "input manifest was 0123456789abcdef, now")),
    Case("evaluate: --threshold nan", evaluate_args("--threshold", "nan"), 2,
         ("--threshold", "'nan' is not a finite number")),
    Case("evaluate: --threshold inf", evaluate_args("--threshold", "inf"), 2,
         ("--threshold", "'inf' is not a finite number")),
    Case("evaluate: --compare with no product in common", evaluate_args(other_rows=[
        {**row, "product_id": "P2"} for row in GOOD_ROWS]), 3,
         ("predictions.jsonl", "other.jsonl", "no product in common")),
]


def assert_clean_failure(result, case: Case, tmp: Path) -> None:
    output = result.output
    assert "Traceback" not in output, output
    assert_plain_numbers(output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{case.name}: {result.exception!r}\n{output}")
    if case.listed_skip:
        assert result.exit_code == 0, output
    else:
        assert result.exit_code == case.exit_code, f"{case.name}: exit {result.exit_code}\n{output}"
    flat = " ".join(output.split())
    for word in case.words:
        assert word in flat, f"{case.name}: {word!r} not in\n{output}"
    assert not finished_train_runs(tmp), f"{case.name}: a finished run folder was written"
    if (tmp / "cache").exists() and not case.listed_skip:   # refused in the first epoch
        assert not list((tmp / "cache").rglob("config.yaml")), f"{case.name}: folder left"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_ends_in_a_clear_error(case, stores, tmp_path):
    args = case.build(stores, tmp_path)
    result = CliRunner().invoke(cli, args)
    assert_clean_failure(result, case, tmp_path)


HOSTILE = [c for c in CASES if "nested" in c.name or "bomb" in c.name or "twice" in c.name]


@pytest.mark.parametrize("case", HOSTILE, ids=[c.name for c in HOSTILE])
def test_hostile_settings_are_refused_within_a_second(case, stores, tmp_path):
    import time

    args = case.build(stores, tmp_path)
    CliRunner().invoke(cli, ["evaluate", "--help"])        # the command line imported once
    started = time.perf_counter()
    result = CliRunner().invoke(cli, args)
    seconds = time.perf_counter() - started
    assert result.exit_code == 3, result.output
    assert seconds < 1.0, f"{case.name}: refused after {seconds:.2f} s"
