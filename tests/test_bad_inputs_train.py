"""A corpus of bad inputs for train / evaluate / predict, walked through the real command line.

Every case must end without a traceback, with a non-zero exit code (or a listed skip), and
without a finished run folder holding results made from bad data. Each case names the words
the message must contain, so an error that stops for the wrong reason fails too.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pytest
import yaml
from click.testing import CliRunner

from feature_stores import stores_for, write_probe_store, write_roi_store, write_text_store
from mrhp_prep.cli import cli
from mrhp_prep.data.manifest import Manifest
from train_fixtures import one_torch_thread, sample_stores  # noqa: F401

SMALL = ["model.text_hidden=16", "model.image_hidden=8", "model.shared_hidden=8",
         "train.epochs=1"]


# -- helpers that damage real stores ------------------------------------------------------------
def _copy_store(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def read_shard(path: Path) -> pa.Table:
    """An Arrow IPC file read into memory (not mapped: the tests rewrite it in place)."""
    with pa.OSFile(str(path), "rb") as source:
        return pa.ipc.open_file(pa.BufferReader(source.read())).read_all()


def rewrite_shard(path: Path, column: str, change: Callable[[list], list], row: int = 0,
                  batch_rows: int | None = None) -> None:
    """Rewrite one list column value of row `row` in an Arrow IPC file, in place (record
    batches of `batch_rows` rows; one batch by default)."""
    table = read_shard(path)
    values = table.column(column).to_pylist()
    values[row] = change(values[row])
    index = table.schema.get_field_index(column)
    table = table.set_column(index, table.schema.field(column),
                             pa.array(values, table.schema.field(column).type))
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=batch_rows)


def finished_train_runs(root: Path) -> list[Path]:
    """Folders under `root` that a finished `train` wrote (MANIFEST.json of stage train)."""
    found = []
    for manifest in Path(root).rglob("MANIFEST.json"):
        if json.loads(manifest.read_text()).get("stage") == "train":
            found.append(manifest.parent)
    return found


def image_ids_of(manifest_dir: Path, split: str, owner: str = "product") -> set[str]:
    manifest = Manifest(manifest_dir)
    table = manifest.products if owner == "product" else manifest.reviews
    column = "product_id" if owner == "product" else "review_id"
    owners = set(table.loc[table["split"] == split, column])
    images = manifest.images
    return set(images.loc[images["item_id"].isin(owners), "image_id"])


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


def _train_args(stores: dict, tmp: Path, **replace) -> list[str]:
    chosen = {**{k: stores[k] for k in ("manifest", "rois", "text", "probes")}, **replace}
    args = ["train", "--cache-dir", str(tmp / "cache"), "--device", "cpu", "--num-workers", "0"]
    for role, path in chosen.items():
        if path is not None:
            args += [f"--{role}", str(path)]
    for setting in SMALL:
        args += ["--set", setting]
    return args


def nan_rois(split: str):
    def build(stores, tmp):
        bad = image_ids_of(stores["manifest"], split)
        rois = write_roi_store(tmp / "rois", stores["manifest"], dim=8, feature_fn=lambda i, n: (
            np.full((n, 8), np.nan) if i in bad else np.random.default_rng(0).normal(size=(n, 8))))
        return _train_args(stores, tmp, rois=rois)
    return build


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
    return _train_args(stores, tmp, text=text)


def nan_vectors(stores, tmp):
    text = _copy_store(stores["text"], tmp / "text")
    vectors = np.load(text / "vectors-review.npy")
    vectors[5] = np.nan
    np.save(text / "vectors-review.npy", vectors)
    return _train_args(stores, tmp, text=text)


def damaged_shard(column: str, change: Callable[[list], list]):
    def build(stores, tmp):
        text = _copy_store(stores["text"], tmp / "text")
        rewrite_shard(text / "review-00001.arrow", column, change)
        return _train_args(stores, tmp, text=text)
    return build


def nan_label(stores, tmp):
    import pandas as pd

    manifest = _copy_store(stores["manifest"], tmp / "manifest")
    reviews = pd.read_parquet(manifest / "reviews.parquet")
    reviews["label"] = reviews["label"].astype("float64")
    reviews.loc[reviews["split"] == "dev", "label"] = np.nan
    reviews.to_parquet(manifest / "reviews.parquet")
    return _train_args(stores, tmp, manifest=manifest)


def partial_probes(stores, tmp):
    reviews = Manifest(stores["manifest"]).reviews["review_id"].tolist()
    probes = write_probe_store(tmp / "probes", stores["manifest"], skip=reviews[::2])
    return _train_args(stores, tmp, probes=probes)


def foreign_text(stores, tmp):
    """A text store of the same manifest with every review id renamed (other data)."""
    text = _copy_store(stores["text"], tmp / "text")
    for shard in sorted(text.glob("review-*.arrow")):
        table = read_shard(shard)
        renamed = pa.array([f"OTHER-{i}" for i in table.column("id").to_pylist()], pa.string())
        table = table.set_column(0, "id", renamed)
        with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    return _train_args(stores, tmp, text=text)


def partial_rois(stores, tmp):
    rois = write_roi_store(tmp / "rois", stores["manifest"], dim=8,
                           skip=sorted(image_ids_of(stores["manifest"], "train", "review")))
    return _train_args(stores, tmp, rois=rois)


def truncated(store: str, name: str):
    """A copy of the store with file `name` cut to half its size."""
    def build(stores, tmp):
        folder = _copy_store(stores[store], tmp / store)
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:len(data) // 2])
        return _train_args(stores, tmp, **{store: folder})
    return build


def config_file(text: str):
    def build(stores, tmp):
        (tmp / "mine.yaml").write_text(text)
        return _train_args(stores, tmp) + ["--config", str(tmp / "mine.yaml")]
    return build


def with_settings(*settings):
    def build(stores, tmp):
        args = _train_args(stores, tmp)
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


def _jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


GOOD_ROWS = [{"product_id": "P1", "review_id": f"R{i}", "label": i % 3, "score": 0.1 * i}
             for i in range(4)]

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
    Case("evaluate: repeated review id", predictions_file(
        ".jsonl", _jsonl(GOOD_ROWS + [GOOD_ROWS[1]])), 3, ("review_id", "'R1'", "more than once")),
    Case("evaluate: null product id", predictions_file(
        ".jsonl", _jsonl(GOOD_ROWS + [{**GOOD_ROWS[0], "review_id": "R9", "product_id": None}])),
         3, ("product_id", "row 4")),
    Case("evaluate: header-only CSV", predictions_file(
        ".csv", "product_id,review_id,label,score\n"), 3, ("no rows",)),
    Case("evaluate: empty JSON lines", predictions_file(".jsonl", ""), 3, ("predictions",)),
    Case("evaluate: inf score", predictions_file(
        ".csv", "product_id,review_id,label,score\nP1,R1,1,inf\nP1,R2,0,0.5\n"), 3,
         ("score", "finite")),
    Case("evaluate: NaN score", predictions_file(
        ".jsonl", _jsonl(GOOD_ROWS).replace("\"score\": 0.1", "\"score\": NaN", 1)), 3, ("score",)),
]


def assert_clean_failure(result, case: Case, tmp: Path) -> None:
    output = result.output
    assert "Traceback" not in output, output
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



# -- listed skips: partial stores the run was told to accept, failures their stage listed ------
def _coverage_of(output: str) -> dict:
    run = Path(output.strip().splitlines()[-1])
    return json.loads((run / "MANIFEST.json").read_text())["counts"]["coverage"]


def test_allow_partial_trains_and_reports_the_coverage(stores, tmp_path):
    args = partial_probes(stores, tmp_path) + ["--allow-partial"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "probes coverage" in result.output and "21 of 43 reviews (48.8%)" in result.output
    coverage = _coverage_of(result.stdout)
    assert coverage["probes"]["missing"] == 22 and coverage["probes"]["share"] < 0.5
    assert coverage["text"]["share"] == 1.0 and coverage["rois"]["missing"] == 0


def test_images_the_rois_stage_listed_as_failed_are_a_skip_not_an_error(stores, tmp_path):
    skipped = sorted(image_ids_of(stores["manifest"], "train", "review"))
    args = partial_rois(stores, tmp_path)
    with open(tmp_path / "rois" / "failures.jsonl", "a", encoding="utf-8") as handle:
        for image_id in skipped:
            handle.write(json.dumps({"item": image_id, "reason": "cannot decode"}) + "\n")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert f"rois coverage {23 - len(skipped)} of 23 images" in flat
    assert f"{len(skipped)} listed as failed" in flat
    assert _coverage_of(result.stdout)["rois"]["listed"] == len(skipped)


# -- predict ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(stores, tmp_path_factory):
    """A finished one-epoch sancl run of the sample."""
    result = CliRunner().invoke(cli, _train_args(stores, tmp_path_factory.mktemp("tiny")))
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


def test_a_finished_run_writes_strict_json(tiny_run):
    def refuse(token):
        raise AssertionError(f"{token} in strict JSON")

    metrics = json.loads((tiny_run / "metrics.json").read_text(), parse_constant=refuse)
    assert all(np.isfinite(metrics["dev"][m]) for m in ("map", "ndcg@3", "ndcg@5", "mrr"))
    for line in (tiny_run / "predictions-test.jsonl").read_text().splitlines():
        assert np.isfinite(json.loads(line, parse_constant=refuse)["score"])


def test_predict_refuses_product_with_split(tiny_run):
    result = CliRunner().invoke(cli, ["predict", "--run", str(tiny_run), "--product",
                                      "B00SAMP007", "--split", "test", "--device", "cpu"])
    assert result.exit_code == 2 and "not both" in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def test_predict_refuses_a_checkpoint_of_another_model(tiny_run, stores, tmp_path):
    import torch

    from mrhp_prep.train import checkpoints
    from mrhp_prep.train.config import resolve_config
    from mrhp_prep.train.dataset import FeatureSources
    from mrhp_prep.train.models import build_model

    run = _copy_store(tiny_run, tmp_path / "run")
    sources = FeatureSources(stores["manifest"], rois=stores["rois"], text=stores["text"])
    config = resolve_config("mcl", overrides=["model.hidden_dim=8"], relevance_threshold=1)
    torch.manual_seed(0)
    other = build_model("mcl", config["model"], sources.model_inputs())
    checkpoints.save(run / "checkpoints" / "mcl.pt", {"model": checkpoints.model_state(other)})
    result = CliRunner().invoke(cli, ["predict", "--run", str(run), "--checkpoint", "mcl",
                                      "--split", "test", "--device", "cpu",
                                      "--output", str(tmp_path / "out.jsonl")])
    assert result.exit_code == 3, result.output
    assert "mcl.pt" in result.output and "does not fit the run's sancl model" in result.output
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.slow
def test_the_console_script_prints_no_traceback(tmp_path):
    import os
    import subprocess
    import sys

    path = tmp_path / "p.jsonl"
    path.write_text(_jsonl(GOOD_ROWS + [GOOD_ROWS[0]]))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "mrhp_prep", "evaluate", str(path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 3 and "Traceback" not in done.stderr
    assert "'R0'" in done.stderr and "more than once" in done.stderr


def test_shard_rows_count_from_the_start_of_the_file(stores, tmp_path):
    """A damaged row in the second record batch of a shard is named by its row in the file."""
    text = _copy_store(stores["text"], tmp_path / "text")
    shard = text / "review-00000.arrow"
    rows = read_shard(shard).num_rows
    bad_id = read_shard(shard).column("id")[rows - 1].as_py()
    rewrite_shard(shard, "token_ids", lambda ids: ids[:-1] + [10**6], row=rows - 1,
                  batch_rows=rows // 2)
    result = CliRunner().invoke(cli, _train_args(stores, tmp_path, text=text))
    assert result.exit_code == 3, result.output
    assert f"row {rows - 1} (id {bad_id})" in result.output


def test_predict_refuses_a_damaged_checkpoint(tiny_run, tmp_path):
    run = _copy_store(tiny_run, tmp_path / "run")
    best = run / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:100])
    result = CliRunner().invoke(cli, ["predict", "--run", str(run), "--split", "test",
                                      "--device", "cpu", "--output", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 3 and "cannot read the checkpoint" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o.jsonl").exists()


def test_a_nan_read_by_a_dataloader_worker_is_named_too(stores, tmp_path):
    """The check runs in the main process on the collated batch, so worker processes do not
    turn the error into a wrapped traceback."""
    args = nan_rois("train")(stores, tmp_path)
    args[args.index("--num-workers") + 1] = "2"
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output and "rois.h5" in result.output
    assert "'features'" in result.output and not finished_train_runs(tmp_path)
