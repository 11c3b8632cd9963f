"""The command line: help everywhere, YAML settings with CLI overrides, pipelines."""

from __future__ import annotations

from pathlib import Path

import yaml

from mrhp_prep.cli import cli
from mrhp_prep.command_table import COMMANDS

from release_files import default_tables, write_release

REPO = Path(__file__).resolve().parents[1]


def test_every_command_has_help_with_defaults(runner):
    top = runner.invoke(cli, ["--help"])
    assert top.exit_code == 0
    for name in COMMANDS:
        assert name in top.output
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage: " in result.output
    assert "default: cache]" in runner.invoke(cli, ["ingest", "--help"]).output
    said = " ".join(top.output.split())
    for code in ("3 bad input", "4 every item failed", "5 the environment failed",
                 "130 interrupted"):
        assert code in said, said


def test_the_readme_names_the_commands_that_take_a_settings_file():
    """The README lists the commands whose `--config` is the shared file of option values;
    the list is the command table's, so it cannot say "every command" again unnoticed."""
    import re

    import click

    from mrhp_prep.cli_options import _load_config

    ctx = click.Context(cli)
    shared = set()
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        if any("--config" in getattr(p, "opts", ()) and p.callback is _load_config
               for p in command.params):
            shared.add(name)
    text = " ".join((REPO / "README.md").read_text().split())
    listed = re.search(r"is taken by (.*?)\. `train --config`", text).group(1)
    assert set(re.findall(r"`([a-z-]+)`", listed)) == shared
    without = re.search(r"and (`export-rois`.*?) take their options on the command line",
                        text).group(1)
    assert set(re.findall(r"`([a-z-]+)`", without)) | shared | {"train", "run"} == set(COMMANDS)


def test_settings_file_with_command_line_override(runner, tmp_path):
    raw = write_release(tmp_path / "raw", default_tables())
    config = tmp_path / "ingest.yaml"
    config.write_text(yaml.safe_dump({"dataset": "amazon", "category": "electronics",
                                      "labels": "graded", "cache-dir": str(tmp_path / "c")}))
    from_file = runner.invoke(cli, ["ingest", str(raw), "--config", str(config)])
    assert from_file.exit_code == 0, from_file.output
    folder = Path(from_file.stdout.strip().splitlines()[-1])
    manifest = yaml.safe_load((folder / "MANIFEST.json").read_text())
    assert manifest["settings"]["labels"] == "graded"
    overridden = runner.invoke(cli, ["ingest", str(raw), "--config", str(config),
                                     "--labels", "raw"])
    folder = Path(overridden.stdout.strip().splitlines()[-1])
    assert yaml.safe_load((folder / "MANIFEST.json").read_text())["settings"]["labels"] == "raw"


def test_settings_file_may_give_the_argument_and_flags_as_words(runner, tmp_path):
    raw = write_release(tmp_path / "raw", default_tables())
    config = tmp_path / "ingest.yaml"
    config.write_text(yaml.safe_dump({"raw_dir": str(raw), "dataset": "amazon",
                                      "category": "electronics", "force": "off",
                                      "out": str(tmp_path / "m")}))
    first = runner.invoke(cli, ["ingest", "--config", str(config)])
    assert first.exit_code == 0, first.output
    stamp = (tmp_path / "m" / "MANIFEST.json").stat().st_mtime_ns
    again = runner.invoke(cli, ["ingest", "--config", str(config)])   # "off": reused
    assert again.exit_code == 0 and (tmp_path / "m" / "MANIFEST.json").stat().st_mtime_ns == stamp


def test_settings_keys_may_be_the_option_names_not_only_the_python_ones(runner, tmp_path):
    import numpy as np
    import h5py

    source = tmp_path / "feats"
    source.mkdir()
    np.savez(source / "a.npz", x=np.full((2, 4), 0.1, np.float32),
             bbox=np.ones((2, 4), np.float32), image_h=10, image_w=10)
    config = tmp_path / "import.yaml"    # --format and --dtype set fmt and feature_dtype
    config.write_text(yaml.safe_dump({"format": "npz", "dtype": "float16",
                                      "out": str(tmp_path / "store")}))
    result = runner.invoke(cli, ["import-rois", str(source), "--config", str(config)])
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "store" / "rois.h5", "r") as handle:
        assert handle["features"].dtype == np.float16

    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump({"stages": [
        {"command": "extract-rois", "args": {"images": str(tmp_path), "weights": "random",
                                             "nms": 0.4, "conf_thresh": 0.25}}]}))
    planned = runner.invoke(cli, ["run", str(pipeline), "--dry-run"])
    assert planned.exit_code == 0, planned.output
    assert "--nms 0.4" in planned.output and "--conf 0.25" in planned.output


def test_pipeline_runs_reuses_and_forces(runner, tmp_path):
    write_release(tmp_path / "raw", default_tables())
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump({"cache_dir": "cache", "stages": [
        {"command": "ingest", "name": "first", "args": {"raw_dir": "raw", "dataset": "amazon",
                                                         "category": "electronics"}},
        {"command": "ingest", "args": {"raw_dir": "raw", "dataset": "amazon",
                                       "category": "electronics", "labels": "graded",
                                       "out": "{here}/second"}},
    ]}))
    dry = runner.invoke(cli, ["run", str(pipeline), "--dry-run"])
    assert dry.exit_code == 0 and not (tmp_path / "cache").exists()
    first = runner.invoke(cli, ["run", str(pipeline)])
    assert first.exit_code == 0, first.output
    assert Path(first.stdout.strip().splitlines()[-1]) == tmp_path / "second"
    manifest = tmp_path / "second" / "MANIFEST.json"
    stamp = manifest.stat().st_mtime_ns
    assert runner.invoke(cli, ["run", str(pipeline)]).exit_code == 0
    assert manifest.stat().st_mtime_ns == stamp, "a finished stage must be reused"
    assert runner.invoke(cli, ["run", str(pipeline), "--force"]).exit_code == 0
    assert manifest.stat().st_mtime_ns != stamp


def test_pipeline_errors_name_the_stage(runner, tmp_path):
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump({"stages": [{"command": "ingest", "args": {"nope": 1}}]}))
    result = runner.invoke(cli, ["run", str(pipeline)])
    assert result.exit_code == 3 and "nope" in result.output and "stage 0" in result.output
    pipeline.write_text(yaml.safe_dump({"stages": [{"command": "ingest",
                                                    "args": {"raw_dir": "{missing}"}}]}))
    assert "names no earlier stage" in runner.invoke(cli, ["run", str(pipeline)]).output


def test_shipped_pipelines_parse_and_name_real_commands(runner):
    for path in sorted((REPO / "pipelines").glob("*.yaml")):
        result = runner.invoke(cli, ["run", str(path), "--dry-run"])
        assert result.exit_code == 0, (path.name, result.output)
