"""benchmarks/gpu.py runs on a CPU at small sizes and writes every figure it promises."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def test_small_cpu_run_writes_finite_figures_for_every_stage(tmp_path):
    out = tmp_path / "gpu-benchmark.json"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--small",
                           "--device", "cpu", "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device_type"] == "cpu" and result["small"] is True
    assert _finite(result["seconds"]) and result["seconds"] > 0

    extract = result["extract_rois"]
    combos = {(r["kernels"], r["batch_size"], r["precision"], r["decode"])
              for r in extract["rows"]}
    assert combos == {("fused", b, p, "cpu") for b in (1, 2) for p in ("fp32", "bf16")} | {
        ("reference", 2, "fp32", "cpu")}
    for row in extract["rows"]:
        for key in ("images_s", "wait_share", "peak_mb", "regions_per_image"):
            assert _finite(row[key]), (key, row)
        assert row["images_s"] > 0 and 0 <= row["wait_share"] < 1
        assert row["regions_per_image"] >= 1
    fp32, bf16 = extract["agreement_with_exact"]
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    for agree in (fp32, bf16):
        assert 0 <= agree["same_count_share"] <= 1 and 0 <= agree["mean_best_iou"] <= 1
        assert _finite(agree["feature_max_rel_diff"])
    # Fused kernels in fp32 change float32 rounding only. At --small sizes every one of the
    # 4 proposals is stored, and boxes are matched by overlap, so no near-tie can reorder.
    assert fp32["same_count_share"] == 1 and fp32["mean_best_iou"] > 0.999

    embed = result["embed_text"]
    assert embed["tokens"] > 0 and _finite(embed["tokenize_tokens_s"])
    assert {r["precision"] for r in embed["rows"]} == {"fp32", "bf16"}
    for row in embed["rows"]:
        assert _finite(row["tokens_s"]) and row["tokens_s"] > 0 and _finite(row["peak_mb"])

    train = result["train"]
    assert [r["model"] for r in train["frozen_features"]] == ["sancl", "mcl", "mmss"]
    assert [r["model"] for r in train["finetune"]] == ["sancl fine-tuned"]
    # the fine-tuned encoder's weights count among the trained parameters
    assert train["finetune"][0]["parameters"] > train["frozen_features"][0]["parameters"]
    for row in train["frozen_features"] + train["finetune"]:
        for key in ("steps_s", "rows_s", "text_tokens_s", "data_share", "peak_mb",
                    "epoch_minutes_amazon_home", "loader_batches_s"):
            assert _finite(row[key]), (key, row)
        assert row["steps_s"] > 0 and 0 <= row["data_share"] < 1 and row["loader_batches_s"] > 0

    table = done.stdout
    assert "extract-rois" in table and "embed-text" in table and "mmss" in table
