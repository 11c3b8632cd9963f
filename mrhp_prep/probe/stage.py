"""The probe-masks stage: manifest reviews -> Arrow shards of sentence masks.

Output folder (`cache/<dataset>/probe-masks/<fingerprint>/`):

- `probe-00000.arrow`, `probe-00001.arrow`, ...: Arrow IPC stream files, `part_size` reviews
  each (fewer in the last), schema `PROBE_SCHEMA`:
  review_id string; sentence_start, sentence_end list<int32> (character offsets into the
  manifest's review `text`, end exclusive); sentence_mask list<bool>; mention_start,
  mention_end list<int32> (the gold cluster's mentions in the review); core_words
  list<string>; rule string (coref | first-cluster | core-word | none).
- `parts/probe-NNNNN.json`: each part's counts, failures and the size and SHA-256 of its
  Arrow file, written after it (`verify.record_part`); a part with both, its file matching
  the record, is done, so a killed run resumes at the first part without them (a damaged
  part, or one whose summary is damaged, is masked again).
- `failures.jsonl`, `MANIFEST.json` (written last; it records each shard's size and SHA-256).

The shard format (schema, writer, readers) is `shards.py`.

Reviews are split between job-array shards by `shard_of(review_id, num_shards)`; each shard
is its own stage folder (its settings hold the shard), with all of its reviews.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from ..cache import StageRun, open_stage
from ..progress import progress
from ..shards import shard_of
from ..verify import file_record, finished_part, record_part
from ..workers import ignore_interrupts, stop_pool
from .builder import BuilderConfig, ProbeMaskBuilder
from .core_words import ProductTerms
from .masks import RULE_LABELS
from .shards import FORMAT_VERSION, STAGE, probe_schema, read_probe_masks, shard_name, write_shard

log = logging.getLogger(__name__)

__all__ = ["FORMAT_VERSION", "STAGE", "read_probe_masks", "run_probe_masks"]
FLAG_COUNTS = {"empty": "empty_reviews", "long-sentence": "reviews_with_long_sentence",
               "not-english": "reviews_not_english"}


def run_probe_masks(manifest_dir, *, language: str = "auto", spacy_model: str | None = None,
                    coref: str = "builtin", rule: str = "paper", batch_size: int = 64,
                    workers: int = 1, part_size: int = 2000, num_shards: int = 1,
                    shard_index: int = 0, out=None, cache_dir="cache",
                    force: bool = False) -> StageRun:
    """Compute (or resume, or find cached) the probe masks of a manifest's reviews."""
    from ..data.manifest import Manifest

    manifest = Manifest(manifest_dir)
    if language == "auto":
        language = "id" if manifest.dataset == "lazada" else "en"
    config = BuilderConfig(language=language, spacy_model=spacy_model, coref=coref, rule=rule,
                           batch_size=batch_size)
    builder = ProbeMaskBuilder(config)
    settings = {"language": language, "spacy_model": builder.language.model_name,
                "coref": coref, "rule": rule, "part_size": part_size,
                "num_shards": num_shards, "shard_index": shard_index}
    run = open_stage(STAGE, dataset=manifest.name, settings=settings,
                     inputs={"manifest": manifest_dir}, format_version=FORMAT_VERSION,
                     out=out, cache_dir=cache_dir, force=force)
    if run.complete:
        log.info("probe masks are up to date in %s", run.path)
        return run

    with run.computing():
        reviews = manifest.reviews[["review_id", "product_id", "text"]]
        if num_shards > 1:
            reviews = reviews[[shard_of(str(rid), num_shards) == shard_index
                               for rid in reviews["review_id"]]]
        products = manifest.products.set_index("product_id")["name"]
        product_ids = sorted(set(reviews["product_id"]) & set(products.index))
        terms_by_product = dict(zip(product_ids, builder.product_terms(
            [products[pid] for pid in product_ids])))

        items, failures = [], []
        for review_id, product_id, text in reviews.itertuples(index=False):
            terms = terms_by_product.get(product_id)
            if terms is None:
                failures.append({"item": str(review_id), "reason": "unknown product",
                                 "product_id": str(product_id)})
                continue
            items.append((str(review_id), text, terms.to_json()))
        parts = [items[i:i + part_size] for i in range(0, len(items), part_size)]
        parts_dir = run.path / "parts"
        parts_dir.mkdir(exist_ok=True)
        # part -> its summary, for the parts an earlier run finished (and then this one's)
        summaries = {k: found for k in range(len(parts))
                     if (found := _finished_part(run.path, k)) is not None}
        if summaries:
            log.info("resuming: %d of %d parts already written", len(summaries), len(parts))
        todo = [k for k in range(len(parts)) if k not in summaries]

        with progress(total=len(items), desc="probe-masks", unit="review") as bar:
            bar.update(sum(len(parts[k]) for k in summaries))
            if workers <= 1 or len(todo) <= 1:
                for k in todo:
                    results = []
                    for result in builder.build((rid, text, ProductTerms.from_json(t))
                                                for rid, text, t in parts[k]):
                        results.append(result)
                        bar.update(1)
                    summaries[k] = _write_part(run.path, k, results)
            else:
                summaries.update(_run_in_workers(builder, parts, todo, run.path, bar, workers))
        summaries = [summaries[k] for k in range(len(parts))]

        counts, rules, examples = _collect(run, summaries, failures)
        counts["products_without_core_words"] = sum(
            1 for pid in product_ids if not terms_by_product[pid].core_words)
        counts["reviews"] = len(reviews)
        written = counts["written"]
        marked = written - rules.get("none", 0)
        run.finish(counts, rule_counts=rules, flagged_examples=examples,
                   marked_share=round(marked / written, 4) if written else 0.0,
                   schema=str(probe_schema()), files=_file_records(run.path, summaries))
    return run


def _summary_path(path: Path, k: int) -> Path:
    return path / "parts" / f"probe-{k:05d}.json"


def _finished_part(path: Path, k: int) -> dict | None:
    """The summary of part k when an earlier run finished it: its shard and summary written,
    the shard matching the size and SHA-256 the summary recorded; else None (also for a
    damaged summary or shard: the part is masked again)."""
    return finished_part(path / shard_name(k), _summary_path(path, k),
                         "masking its reviews again")


def _file_records(path: Path, summaries: list[dict]) -> dict[str, dict]:
    """Each shard's size and SHA-256, as its summary recorded them when it was written."""
    return {shard_name(k): summary.get("file") or file_record(path / shard_name(k))
            for k, summary in enumerate(summaries)}


def _write_part(path: Path, k: int, results) -> dict:
    """The part's Arrow file, then its JSON summary (the part is done once both exist);
    returns the summary."""
    rows = [r.row for r in results if r.row is not None]
    write_shard(path / shard_name(k), rows)
    flags = Counter(flag for r in results for flag in r.flags)
    summary = {
        "written": len(rows),
        "rules": dict(Counter(row["rule"] for row in rows)),
        "flags": dict(flags),
        "flagged": {flag: [r.review_id for r in results if flag in r.flags][:20]
                    for flag in flags},
        "failures": [{"item": r.review_id, "reason": r.failure}
                     for r in results if r.failure is not None],
    }
    return record_part(_summary_path(path, k), path / shard_name(k), **summary)


def _collect(run: StageRun, summaries: list[dict], failures: list[dict]):
    counts = Counter({"written": 0, **{name: 0 for name in FLAG_COUNTS.values()}})
    rules = Counter({label: 0 for label in RULE_LABELS})
    flagged: dict[str, list] = {}
    for failure in failures:
        run.add_failure(**failure)
    for summary in summaries:
        counts["written"] += summary["written"]
        rules.update(summary["rules"])
        for flag, n in summary["flags"].items():
            counts[FLAG_COUNTS.get(flag, flag)] += n
            flagged.setdefault(flag, []).extend(summary["flagged"].get(flag, []))
        for failure in summary["failures"]:
            run.add_failure(failure["item"], failure["reason"])
    counts["failed"] = len(run.failures)
    examples = {flag: ids[:20] for flag, ids in flagged.items()}
    return dict(counts), dict(rules), examples


# Worker processes: each builds its own pipeline once, then masks whole parts.
_WORKER_BUILDER: ProbeMaskBuilder | None = None


def _init_worker(config: BuilderConfig) -> None:
    global _WORKER_BUILDER
    ignore_interrupts()
    if _WORKER_BUILDER is None or _WORKER_BUILDER.config != config:
        _WORKER_BUILDER = ProbeMaskBuilder(config)


def _mask_part(k: int, items: list) -> tuple[int, list]:
    results = list(_WORKER_BUILDER.build(
        (rid, text, ProductTerms.from_json(t)) for rid, text, t in items))
    return k, results


def worker_pool(builder: ProbeMaskBuilder, workers: int) -> ProcessPoolExecutor:
    """Processes that mask parts with `_mask_part`.

    On Linux they are forked from this process with its loaded pipeline (no second load);
    elsewhere they are spawned and each loads its own.
    """
    global _WORKER_BUILDER
    methods = multiprocessing.get_all_start_methods()
    method = "fork" if sys.platform.startswith("linux") and "fork" in methods else "spawn"
    if method == "fork":
        _WORKER_BUILDER = builder
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method),
                               initializer=_init_worker, initargs=(builder.config,))


def _run_in_workers(builder, parts, todo, path, bar, workers) -> dict[int, dict]:
    """Mask the parts `todo` in worker processes; returns each part's summary."""
    workers = min(workers, len(todo), os.cpu_count() or 1)
    pool = worker_pool(builder, workers)
    summaries = {}
    try:
        futures = [pool.submit(_mask_part, k, parts[k]) for k in todo]
        for future in as_completed(futures):
            k, results = future.result()
            summaries[k] = _write_part(path, k, results)
            bar.update(len(results))
    except BaseException:       # Ctrl-C or an error: the parts written so far are kept
        stop_pool(pool)
        raise
    pool.shutdown()
    return summaries
