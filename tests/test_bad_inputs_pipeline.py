"""Bad pipeline files (`mrhp-prep run`) and bad `--config` settings files: refused before any
stage computes (the table promises: see bad_input_table)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bad_input_table import Case, params, pipeline_argv, release, run_case
from mrhp_prep.cli import cli


def pipeline_unknown_command_late(tmp):
    return pipeline_argv(tmp, [{"command": "ingest"}, {"command": "embed-txt", "args": {}}])


def pipeline_unknown_placeholder_late(tmp):
    return pipeline_argv(tmp, [{"command": "ingest"},
                               {"command": "embed-text", "args": {"manifest": "{ingets}"}}])


def pipeline_duplicate_names(tmp):
    return pipeline_argv(tmp, [{"command": "ingest"},
                               {"command": "ingest", "args": {"labels": "graded"}}])


def pipeline_flag_not_boolean(tmp):
    return pipeline_argv(tmp, [{"command": "ingest", "args": {"force": "perhaps"}}])


def pipeline_bad_choice_late(tmp):
    return pipeline_argv(tmp, [{"command": "ingest"},
                               {"command": "embed-text", "args": {"manifest": "{ingest}",
                                                                  "mode": "dynamic"}}])


def pipeline_yaml_broken(tmp):
    argv = pipeline_argv(tmp, [{"command": "ingest"}])
    Path(argv[1]).write_text("stages:\n  - command: ingest\n    args: {raw_dir: [unclosed\n")
    return argv


def pipeline_args_not_a_mapping(tmp):
    argv = pipeline_argv(tmp, [{"command": "ingest"}, {"command": "ingest", "name": "b"}])
    spec = yaml.safe_load(Path(argv[1]).read_text())
    spec["stages"][1]["args"] = ["--labels", "raw"]
    Path(argv[1]).write_text(yaml.safe_dump(spec))
    return argv


def pipeline_list_for_a_flag(tmp):
    return pipeline_argv(tmp, [{"command": "ingest", "args": {"force": [True, False]}}])


def pipeline_number_for_a_flag(tmp):
    return pipeline_argv(tmp, [{"command": "ingest", "args": {"force": 2}}])


def pipeline_list_for_a_single_value(tmp):
    # Repeating --min-freq would silently keep the last value.
    return pipeline_argv(tmp, [{"command": "ingest"},
                               {"command": "embed-text", "args": {"manifest": "{ingest}",
                                                                  "min_freq": [1, 5]}}])


def _ingest_with_config(tmp, settings: dict) -> list[str]:
    config = tmp / "settings.yaml"
    config.write_text(yaml.safe_dump(settings))
    return ["ingest", str(release(tmp)), "--dataset", "amazon", "--category", "electronics",
            "--out", str(tmp / "out"), "--config", str(config)]


CASES = [
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
]


@pytest.mark.parametrize("case", params(CASES))
def test_bad_input(case, runner, tmp_path):
    run_case(runner, case, tmp_path)


# --- promises beside the table ------------------------------------------------------------------

def test_pipeline_flag_strings_mean_what_they_say(runner, tmp_path):
    argv = pipeline_argv(tmp_path, [{"command": "ingest", "args": {"out": str(tmp_path / "m")}}])
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
    argv = pipeline_argv(tmp_path, [{"command": "ingest"}, {"command": "embed-text", "args": {
        "manifest": "{ingest}", "vectors": "glove-6b-50d-package", "lowercase": "false",
        "max_length": "64"}}])
    result = runner.invoke(cli, argv + ["--dry-run"])
    assert result.exit_code == 0, result.output
    assert "--no-lowercase" in result.output and "--max-length 64" in result.output
