"""Indonesian rules: core words by the head-noun heuristic, "-nya", "ini", "dia"."""

from __future__ import annotations

from probe_helpers import builder


def terms(name):
    return builder("id").product_terms([name])[0]


def test_head_noun_heuristic_skips_tags_and_marketing_words():
    assert terms("Sepatu Sneakers Pria Casual Kanvas").core_words == ("sepatu",)
    assert terms("[PROMO] Kaos Polos Pria Cotton Combed 30s").core_words == ("kaos",)
    assert terms("Original Termurah Botol Minum 1 Liter").core_words == ("botol",)
    assert terms("100% !!!").core_words == ()


def test_normal_form_cuts_nya_but_not_adverbs_and_keeps_an_nouns():
    language = builder("id").language
    assert language.normal("Sepatunya") == ("sepatu", True)
    assert language.normal("sepertinya")[1] is False
    assert language.normal("pakaian") == ("pakaian", False)  # not the verb root "pakai"


def mask(name, text):
    b = builder("id")
    return next(b.build([("r", text, terms(name))])).row


def test_nya_ini_and_dia():
    row = mask("Selimut Bulu Lembut", "Anak saya suka tidur di sofa. Dia suka sekali. "
               "Ukurannya pas. Ini sangat berguna. Kurirnya ramah.")
    # "Dia" is the child (a person word just before); "-nya" on "ukuran" is the product's;
    # "Ini" alone is the product; "kurirnya" is the courier's own chain
    assert row["sentence_mask"] == [False, False, True, True, False]
    assert row["rule"] == "coref"


def test_lazada_manifest_uses_the_indonesian_rules(sample_manifest, tmp_path):
    import json
    import shutil

    from mrhp_prep.probe.stage import read_probe_masks, run_probe_masks

    folder = tmp_path / "lazada"
    shutil.copytree(sample_manifest, folder)
    info = json.loads((folder / "MANIFEST.json").read_text())
    info["settings"]["dataset"] = "lazada"
    info["fingerprint"] = "1azada0000000000"
    (folder / "MANIFEST.json").write_text(json.dumps(info))
    run = run_probe_masks(folder, out=tmp_path / "out")
    assert run.manifest()["settings"]["language"] == "id"
    assert read_probe_masks(run.path).num_rows == 43
