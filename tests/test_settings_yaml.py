"""The one loader of settings files: what it refuses and what it still reads as YAML does.

(The refusals through every command line entry point are in the bad-input corpus.)"""

from __future__ import annotations

import time

import pytest
import yaml

from bad_input_table import alias_bomb, deep, flow_alias_bomb
from mrhp_prep.errors import InputError
from mrhp_prep.settings_yaml import MAX_DEPTH, MAX_EXPANDED, load_settings, read_settings_file

PLAIN = """\
name: sample
stages:
  - command: ingest
    args: &shared {dataset: amazon, category: home, force: false, labels: [a, 'b']}
  - command: ingest
    args:
      <<: *shared
      labels: graded
"""


def test_what_yaml_reads_the_loader_reads_alike():
    assert load_settings(PLAIN, "p.yaml") == yaml.safe_load(PLAIN)
    assert load_settings("5e-5", "--set x") == "5e-5"        # YAML 1.1, as before
    assert load_settings("", "empty.yaml") is None


def test_nesting_up_to_the_limit_is_read_and_beyond_it_refused():
    assert load_settings(deep(MAX_DEPTH), "f.yaml") is not None
    with pytest.raises(InputError, match=f"nested deeper than {MAX_DEPTH} levels"):
        load_settings(deep(MAX_DEPTH + 1), "f.yaml")
    with pytest.raises(InputError, match="nested deeper"):
        load_settings("a: " + "{b: " * 200 + "1" + "}" * 200, "f.yaml")


@pytest.mark.parametrize("text", [alias_bomb(), flow_alias_bomb(), alias_bomb(levels=30, width=2)])
def test_alias_bombs_are_refused_before_anything_expands(text):
    started = time.perf_counter()
    with pytest.raises(InputError, match=f"more than {MAX_EXPANDED} values"):
        load_settings(text, "bomb.yaml")
    assert time.perf_counter() - started < 1.0


def test_aliases_that_expand_to_little_are_fine():
    text = alias_bomb(levels=3, width=9)        # 9**3 = 729 values
    assert len(sum(load_settings(text, "f.yaml")["bomb"], [])) == 81


def test_an_alias_inside_its_own_anchor_is_refused():
    with pytest.raises(InputError, match="alias \\*a is used inside its own anchor &a"):
        load_settings("x: &a {y: *a}\n", "f.yaml")


def test_keys_given_twice_are_refused_but_merge_keys_may_override():
    with pytest.raises(InputError, match="'b' is given twice \\(line 2 and line 4\\)"):
        load_settings("a: 1\nb: 2\nc: 3\nb: 4\n", "f.yaml")
    with pytest.raises(InputError, match="'1' is given twice"):
        load_settings("x:\n  '1': a\n  '1': b\n", "f.yaml")
    assert load_settings("base: &b {x: 1}\nother: {<<: *b, x: 2}\n", "f.yaml")["other"] == \
        {"x": 2}


def test_broken_yaml_and_several_documents_name_the_file(tmp_path):
    with pytest.raises(InputError, match="file f.yaml: cannot read the settings"):
        load_settings("a: [1\n", "f.yaml")
    with pytest.raises(InputError, match="single document"):
        load_settings("a: 1\n---\nb: 2\n", "f.yaml")
    (tmp_path / "bad.yaml").write_bytes(b"a: \xff\n")
    with pytest.raises(InputError, match="bad.yaml"):
        read_settings_file(tmp_path / "bad.yaml")
