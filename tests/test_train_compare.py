"""Several seeds per config (`train --seeds`), metrics.json provenance, and `compare` on runs
made here: means and standard deviations, paired t-tests checked against scipy, papers' rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from feature_stores import planted_release, stores_for
from mrhp_prep import __version__
from mrhp_prep.cli import cli
from mrhp_prep.data.ingest import ingest
from mrhp_prep.errors import InputError
from mrhp_prep.train.report.metrics import evaluate_rankings
from mrhp_prep.train.report.predictions import read_predictions
from mrhp_prep.train.report.papers import PAPER_METRICS, PAPERS, paper_results
from mrhp_prep.train.loop.provenance import write_strict_json
from mrhp_prep.train.loop.seeds import job_seeds, parse_seeds
from train_fixtures import one_torch_thread  # noqa: F401

# compare.csv and compare-tests.csv hold 10 significant digits (float_format %.10g): a value
# read back is within 5e-10 of it, relative; the float64 arithmetic before (means, standard
# deviations and t over a few runs or products, ~1e-15) is far below that.
CSV = 1e-9


def p_rtol(n: int) -> float:
    """A p-value moves by |d ln p / d ln t| times t's relative error; for Student's t with
    n - 1 degrees of freedom that factor is at most about n (t's tail falls like t^-(n-1))."""
    return CSV * (n + 1)


SMALL = ["model.text_hidden=16", "model.image_hidden=8", "model.shared_hidden=8",
         "train.epochs=1"]                # one epoch, short of learning it all: seeds differ
CONFIGS = {"slow": ["train.lr=0.0001"], "fast": ["train.lr=0.003"]}
SPLIT_ENV = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT",
             "JOB_COMPLETION_INDEX")


def strict_json(path: Path) -> dict:
    def refuse(token):
        raise AssertionError(f"{path} holds {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    raw = planted_release(root / "raw", products_per_split=(10, 5, 6), seed=3)
    manifest = ingest(raw, dataset="amazon", category="home", labels="raw", name="planted",
                      cache_dir=root / "cache").path
    return {**stores_for(manifest, root / "stores", text_dim=8, roi_dim=8), "root": root}


def _train_args(planted, cache, settings):
    args = ["train", "--manifest", str(planted["manifest"]), "--rois", str(planted["rois"]),
            "--text", str(planted["text"]), "--probes", str(planted["probes"]),
            "--cache-dir", str(cache), "--num-workers", "0", "--device", "cpu"]
    for setting in [*SMALL, *settings]:
        args += ["--set", setting]
    return args


@pytest.fixture(scope="module")
def seeded(planted):
    """Two configs x three seeds, one `train --seeds` command per config, one after another."""
    from click.testing import CliRunner

    cache = planted["root"] / "runs"
    folders = {}
    for name, settings in CONFIGS.items():
        result = CliRunner().invoke(cli, [*_train_args(planted, cache, settings),
                                          "--seeds", "1-3"], env={k: None for k in SPLIT_ENV})
        assert result.exit_code == 0, result.output
        folders[name] = [Path(line) for line in result.stdout.strip().splitlines()]
    return {"cache": cache, "folders": folders}


@pytest.mark.slow
def test_each_seed_is_its_own_fingerprinted_run_with_its_provenance(seeded, planted):
    runs = seeded["folders"]["slow"]
    assert len(runs) == 3 and len(set(runs)) == 3
    for seed, run in zip((1, 2, 3), runs):
        metrics = strict_json(run / "metrics.json")
        manifest = json.loads((run / "MANIFEST.json").read_text())
        assert metrics["seed"] == seed and metrics["config"]["train"]["seed"] == seed
        assert metrics["package_version"] == __version__
        assert metrics["fingerprint"] == manifest["fingerprint"] == run.name
        assert set(metrics["input_fingerprints"]) == {"manifest", "rois", "text", "probes"}
        assert metrics["input_fingerprints"] == manifest["inputs"]
        assert metrics["config"]["train"]["lr"] == 0.0001
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert {k: v for k, v in config.items() if k != "inputs"} == metrics["config"]
    scores = [read_predictions(r / "predictions-test.jsonl")["score"].tolist() for r in runs]
    assert scores[0] != scores[1] != scores[2]         # the seeds did change the runs


@pytest.mark.slow
@pytest.mark.parametrize("env,seed", [
    ({"SLURM_ARRAY_TASK_ID": "1"}, 2),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1"}, 3),
    ({"JOB_COMPLETION_INDEX": "0"}, 1)])
def test_an_array_task_trains_its_own_seed_into_the_same_folder(seeded, planted, runner, env,
                                                                 seed):
    args = [*_train_args(planted, seeded["cache"], CONFIGS["slow"]), "--seeds", "1,2,3"]
    result = runner.invoke(cli, args, env={**{k: None for k in SPLIT_ENV}, **env})
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines() == [str(seeded["folders"]["slow"][seed - 1])]
    assert "reused the finished run" in result.output


def test_seed_lists_and_ranges(monkeypatch):
    assert parse_seeds("1,2,3,4,5") == parse_seeds("1-5") == [1, 2, 3, 4, 5]
    assert parse_seeds("1-3,7") == [1, 2, 3, 7]
    for bad in ("1-", "a", "5-1", "1,1"):
        with pytest.raises(InputError):
            parse_seeds(bad)
    for name in SPLIT_ENV:
        monkeypatch.delenv(name, raising=False)
    assert job_seeds([4, 5, 6]) == [4, 5, 6]
    assert job_seeds([4, 5, 6], seed_index=2) == [6]
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    with pytest.raises(InputError):                # an array larger than the seed list
        job_seeds([4, 5, 6])


def test_seeds_refuse_resume(runner, tmp_path):
    result = runner.invoke(cli, ["train", "--resume", str(tmp_path), "--seeds", "1-2"])
    assert result.exit_code == 2 and "--seeds" in result.output


def test_seed_index_without_seeds_is_refused(runner, tmp_path):
    result = runner.invoke(cli, ["train", "--manifest", str(tmp_path), "--seed-index", "1"])
    assert result.exit_code == 2 and "--seed-index" in result.output


def test_metrics_json_is_strict_and_names_a_non_finite_value(tmp_path):
    write_strict_json(tmp_path / "ok.json", {"test": {"map": np.float32(0.5)}})
    assert strict_json(tmp_path / "ok.json") == {"test": {"map": 0.5}}
    with pytest.raises(ValueError, match=r"epochs\[1\]\.loss is nan"):
        write_strict_json(tmp_path / "bad.json", {"epochs": [{"loss": 1.0}, {"loss": np.nan}]})
    assert not (tmp_path / "bad.json").exists()


# --------------------------------------------------------------------------- compare


def _per_product(run: Path, split: str) -> pd.DataFrame:
    threshold = strict_json(run / "metrics.json")["relevance_threshold"]
    frame = read_predictions(run / f"predictions-{split}.jsonl")
    return evaluate_rankings(frame, threshold).per_product.set_index("product_id")


@pytest.mark.slow
@pytest.mark.parametrize("split", ["test", "dev"])
def test_compare_groups_by_config_and_tests_against_scipy(seeded, runner, tmp_path, split):
    out = tmp_path / "cmp"
    result = runner.invoke(cli, ["compare", str(seeded["cache"]), "--split", split,
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out)
    summary = pd.read_csv(out / "compare.csv")
    tests = pd.read_csv(out / "compare-tests.csv")
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "compare.md").read_text()
    assert len(summary) == 2 and set(summary["runs"]) == {3}
    names = {name: summary.loc[summary["group"].str.contains(f"{setting}$"), "group"].item()
             for name, (setting,) in CONFIGS.items()}
    for name, runs in seeded["folders"].items():
        row = summary.set_index("group").loc[names[name]]
        values = [100 * strict_json(r / "metrics.json")[split]["map"] for r in runs]
        assert row["map_mean"] == pytest.approx(np.mean(values), rel=CSV)
        assert row["map_std"] == pytest.approx(np.std(values, ddof=1), rel=CSV)
        assert f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}" in markdown
    # over products: each product's metric averaged over the three seeds, then paired
    averaged = {name: sum(_per_product(r, split) for r in runs) / 3
                for name, runs in seeded["folders"].items()}
    a, b = sorted(names, key=names.get)
    finite_seed_tests = []
    for metric in PAPER_METRICS:
        expected = stats.ttest_rel(averaged[a][metric], averaged[b][metric].loc[averaged[a].index])
        row = tests[(tests["metric"] == metric) & (tests["paired_over"] == "products")].iloc[0]
        assert row["n"] == len(averaged[a])
        if np.isfinite(expected.pvalue):
            assert row["t"] == pytest.approx(expected.statistic, rel=CSV)
            assert row["p"] == pytest.approx(expected.pvalue, rel=p_rtol(row["n"]))
        # over seeds: three seeds in common, run of seed s paired with run of seed s
        by_seed = {name: [strict_json(r / "metrics.json")[split][metric] for r in runs]
                   for name, runs in seeded["folders"].items()}
        expected = stats.ttest_rel(by_seed[a], by_seed[b])
        row = tests[(tests["metric"] == metric) & (tests["paired_over"] == "seeds")].iloc[0]
        assert row["n"] == 3
        if not np.isfinite(expected.pvalue):
            # every seed's difference the same (the planted photos give MAP 1.0 to every run):
            # no t-test, as scipy has none, and no mark
            assert np.allclose(np.subtract(by_seed[a], by_seed[b]), by_seed[a][0] - by_seed[b][0])
            assert pd.isna(row["t"]) and pd.isna(row["p"]) and pd.isna(row["mark"])
            continue
        finite_seed_tests.append(metric)
        assert row["t"] == pytest.approx(expected.statistic, rel=CSV)
        assert row["p"] == pytest.approx(expected.pvalue, rel=p_rtol(3))
        assert row["mark"] == ("**" if expected.pvalue < 0.01 else
                               "*" if expected.pvalue < 0.05 else np.nan) or (
            pd.isna(row["mark"]) and expected.pvalue >= 0.05)
    assert finite_seed_tests                 # the seeds do differ in some metric


@pytest.mark.slow
def test_compare_sets_groups_beside_the_paper(seeded, runner, tmp_path):
    runs = [str(r) for r in seeded["folders"]["slow"]]
    result = runner.invoke(cli, ["compare", *runs, "--paper", "sancl", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    row = pd.read_csv(tmp_path / "compare.csv").iloc[0]
    # amazon home, multimodal, static vectors: Table 1, SANCL (Ours) 63.35 / 54.28 / 57.40
    assert row["paper_table"] == "Table 1"
    assert (row["paper_map"], row["paper_ndcg@3"], row["paper_ndcg@5"]) == (63.35, 54.28, 57.40)
    # both read from the CSV: each within its 10 significant digits
    assert row["difference_map"] == pytest.approx(row["map_mean"] - 63.35,
                                                  abs=CSV * (row["map_mean"] + 63.35))
    assert "63.35 (" in (tmp_path / "compare.md").read_text()


@pytest.mark.slow
def test_runs_from_other_encoder_weights_are_not_seeds_of_one_group(seeded, tmp_path):
    import shutil

    from mrhp_prep.train.report.compare import group_runs, load_run

    runs = []
    for i, (run, weights) in enumerate(zip(seeded["folders"]["slow"], ("a" * 64, "b" * 64))):
        copy = Path(shutil.copytree(run, tmp_path / f"run-{i}"))
        metrics = json.loads((copy / "metrics.json").read_text())
        metrics["text_encoders"] = {"review_tokens.encoder": {"base_model": "bert",
                                                              "base_sha256": weights}}
        (copy / "metrics.json").write_text(json.dumps(metrics))
        runs.append(load_run(copy, "test"))
    groups = group_runs(runs)
    assert len(groups) == 2 and all("inputs" in g.name for g in groups)


def test_compare_sets_dev_scores_beside_no_paper(runner, tmp_path):
    """The papers' figures are test-set figures: --paper with --split dev is refused."""
    result = runner.invoke(cli, ["compare", str(tmp_path), "--paper", "mmss", "--split", "dev"])
    assert result.exit_code == 2 and "--split test" in result.output


def test_compare_without_runs_is_a_clear_error(runner, tmp_path):
    result = runner.invoke(cli, ["compare", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 3 and "no finished training run" in result.output


# --------------------------------------------------------------------------- the papers' file


def test_papers_file_loads_and_every_entry_names_its_table():
    data = paper_results()
    assert set(data["papers"]) == set(PAPERS)
    rows = data["results"]
    assert {r["paper"] for r in rows} == set(PAPERS)
    for row in rows:
        assert re.fullmatch(r"Table \d", row["table"]), row
        assert row["dataset"] in {"amazon", "lazada"}
        assert row["category"] in {"clothing", "electronics", "home"}
        assert row["setting"] in {"text-only", "multimodal"} and row["text"] in {"static", "bert"}
        for metric in PAPER_METRICS:
            assert 30 < row[metric] < 90, row
        assert set(row.get("marked", [])) <= set(PAPER_METRICS)
    keys = [(r["paper"], r["table"], r["dataset"], r["category"], r["setting"], r["text"],
             r["variant"]) for r in rows]
    assert len(keys) == len(set(keys))
    # each paper's main tables cover the 3 categories of each dataset it reports
    main = {("sancl", "Table 1"): 12, ("mcl", "Table 3"): 3, ("mcl", "Table 4"): 3,
            ("mmss", "Table 1"): 3, ("mmss", "Table 2"): 3}
    for (paper, table), count in main.items():
        assert sum(1 for r in rows if (r["paper"], r["table"]) == (paper, table)) == count


@pytest.mark.parametrize("model,settings,probes,variant", [
    ("sancl", [], True, "full"),
    ("sancl", [], False, "w/o probe mask"),
    ("sancl", ["model.probe_beta=0.5"], True, "w/o learned β (fixed at 0.5)"),
    ("sancl", ["model.kappa=0"], True, "w/o cpc_ii and cpc_pr"),
    ("sancl", ["model.kappa=0"], False, None),                  # two ablations at once
    ("sancl", ["model.contrastive_reduction=mean"], True, None),  # not eq. 11-12
    ("mcl", [], False, "full"),
    ("mcl", ["model.contrastive=false"], False, "w/o Contrastive Objective"),
    ("mmss", [], False, "full"),
    ("mmss", ["model.subtasks=[ptrt,pvrv,ptrv,pvrt]"], False, "w/o intra-review r_t r_v"),
    ("mmss", ["model.subtasks=[]"], False, "w/o module (d)"),
    ("mmss", ["model.subtasks=[]", "model.interaction_modeling=false"], False, "w/o module (b)"),
])
def test_a_runs_variant_is_named_as_the_papers_tables_name_it(model, settings, probes, variant):
    from mrhp_prep.train.settings.config import resolve_config
    from mrhp_prep.train.report.papers import variant_of

    config = resolve_config(model, overrides=settings)
    assert variant_of(config, probes) == variant
    if variant is not None:
        names = {r["variant"] for r in paper_results()["results"] if r["paper"] == model}
        assert variant in names


@pytest.mark.slow
def test_seeds_one_after_another_under_torchrun(planted, tmp_path):
    """Two processes, two seeds one after another in one process group (setting a group up
    again on torchrun's store could hang the second seed)."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in SPLIT_ENV}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(repo) + os.pathsep + env.get("PYTHONPATH", ""))
    args = _train_args(planted, tmp_path / "cache", ["train.lr=0.001"])
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "mrhp_prep", *args, "--seeds", "1,2",
               "--out", str(tmp_path / "ddp")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    for seed in (1, 2):
        metrics = strict_json(tmp_path / "ddp" / f"seed-{seed}" / "metrics.json")
        assert metrics["seed"] == seed and metrics["world_size"] == 2


@pytest.mark.slow
def test_unfinished_runs_are_listed_and_left_out(seeded, runner, tmp_path):
    unfinished = tmp_path / "runs" / "half"
    unfinished.mkdir(parents=True)
    (unfinished / "config.yaml").write_text("model: {name: sancl}\n")
    (unfinished / ".stage.json").write_text("{}")
    finished = str(seeded["folders"]["slow"][0])
    result = runner.invoke(cli, ["compare", finished, str(tmp_path / "runs"),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "unfinished runs left out" in result.output and str(unfinished) in result.output
    summary = pd.read_csv(tmp_path / "out" / "compare.csv")
    assert summary["runs"].tolist() == [1] and np.isnan(summary["map_std"].item())
