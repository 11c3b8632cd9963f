"""Bad pipeline files (`mrhp-prep run`) and bad `--config` settings files: refused before any
stage computes (the table promises: see bad_input_table)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from bad_input_table import Case, alias_bomb, deep, params, pipeline_argv, release, run_case
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


# --- hostile settings files: refused by the one safe loader, naming the file ------------------

def _pipeline_text(tmp, text: str) -> list[str]:
    argv = pipeline_argv(tmp, [{"command": "ingest"}])
    Path(argv[1]).write_text(text)
    return argv


def pipeline_alias_bomb(tmp):
    return _pipeline_text(tmp, alias_bomb() + "stages:\n  - command: ingest\n"
                               "    args: {raw_dir: *l8}\n") + ["--dry-run"]


def pipeline_nested_deep(tmp):
    return _pipeline_text(tmp, f"stages:\n  - command: ingest\n    args: {{raw_dir: {deep()}}}\n")


def pipeline_alias_in_itself(tmp):
    return _pipeline_text(tmp, "stages: &s\n  - command: ingest\n    args: {raw_dir: *s}\n")


def pipeline_duplicate_key(tmp):
    argv = pipeline_argv(tmp, [{"command": "ingest"}])
    text = Path(argv[1]).read_text().replace("    dataset: amazon\n",
                                             "    dataset: amazon\n    dataset: lazada\n")
    Path(argv[1]).write_text(text)
    return argv


def pipeline_no_stages(tmp):
    return _pipeline_text(tmp, "stages: []\n")


def pipeline_nested_list_argument(tmp):
    # Two lists inside the list of shards: they would become one argument "['a', 'b']".
    return _pipeline_text(tmp, "stages:\n  - command: merge-rois\n"
                               "    args: {shards: [[a, b], [c]]}\n")


def pipeline_misspelt_key(tmp):
    return _pipeline_text(tmp, "stages:\n  - command: ingest\n    arg: {labels: raw}\n")


def _ingest_with_config_text(tmp, text: str) -> list[str]:
    argv = _ingest_with_config(tmp, {})
    Path(argv[-1]).write_text(text)
    return argv


HOSTILE = [
    Case("run: an alias bomb (billion laughs)", pipeline_alias_bomb,
         refused=("p.yaml", "expand", "100000 values")),
    Case("run: 5000 levels of nesting", pipeline_nested_deep,
         refused=("p.yaml", "nested deeper than 64 levels")),
    Case("run: an alias inside its own anchor", pipeline_alias_in_itself,
         refused=("p.yaml", "*s", "inside its own anchor")),
    Case("run: a key given twice", pipeline_duplicate_key,
         refused=("p.yaml", "'dataset' is given twice")),
    Case("run: no stages", pipeline_no_stages, refused=("p.yaml", "no stages")),
    Case("run: lists inside a list of arguments", pipeline_nested_list_argument,
         refused=("shards", "['a', 'b']", "not a single value")),
    Case("run: a misspelt stage key", pipeline_misspelt_key,
         refused=("p.yaml", "unknown key 'arg'", "command, name, args")),
    Case("--config: an alias bomb", lambda tmp: _ingest_with_config_text(tmp, alias_bomb()),
         refused=("settings.yaml", "expand")),
    Case("--config: 5000 levels of nesting",
         lambda tmp: _ingest_with_config_text(tmp, f"labels: {deep()}\n"),
         refused=("settings.yaml", "nested deeper")),
    Case("--config: a key given twice",
         lambda tmp: _ingest_with_config_text(tmp, "labels: raw\nname: x\nlabels: graded\n"),
         refused=("settings.yaml", "'labels' is given twice (line 1 and line 3)")),
]

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


@pytest.mark.parametrize("case", params(CASES + HOSTILE))
def test_bad_input(case, runner, tmp_path):
    run_case(runner, case, tmp_path)


@pytest.mark.parametrize("case", params(HOSTILE))
def test_hostile_settings_are_refused_within_a_second(case, runner, tmp_path):
    argv = case.build(tmp_path)
    started = time.perf_counter()
    result = runner.invoke(cli, argv)
    seconds = time.perf_counter() - started
    assert result.exit_code == 3, result.output
    assert seconds < 1.0, f"{case.name}: refused after {seconds:.2f} s"


def test_an_alias_bomb_is_refused_at_once_in_a_process_of_its_own(tmp_path):
    """The bomb that took 4 minutes and 12 GB: the whole command, start-up included, ends
    well within the time Python takes to start twice over."""
    from running_cli import run_cli

    argv = pipeline_alias_bomb(tmp_path)
    started = time.perf_counter()
    done = run_cli(argv, timeout=60)
    assert done.returncode == 3 and "expand" in done.stderr, done.stderr
    assert time.perf_counter() - started < 20


def test_anchors_that_expand_to_little_are_allowed(runner, tmp_path):
    """A pipeline may share one stage's args with the next through an anchor and a merge."""
    argv = pipeline_argv(tmp_path, [{"command": "ingest"}])
    path = Path(argv[1])
    text = path.read_text().replace("- args:\n", "- args: &common\n", 1)
    assert "&common" in text
    path.write_text(text + "- command: ingest\n  name: graded\n  args:\n    <<: *common\n"
                           "    labels: graded\n")
    result = runner.invoke(cli, argv + ["--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.count("--dataset amazon") == 2 and "--labels graded" in result.output



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
