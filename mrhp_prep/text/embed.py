"""The `embed-text` stage: tokenize product and review text and embed it, into Arrow shards.

Three modes:

- `static`: spaCy rule-based tokens -> vocabulary ids; vocabularies fitted on the train
  split; the embedding matrix of each vocabulary from a GloVe/word2vec/fastText/.npy source.
- `ids`: a transformer's token ids and attention mask, for fine-tuning.
- `features`: frozen hidden states of a transformer per token, float16.

Work is split by id for job arrays (`--num-shards/--shard-index`): a job embeds the items
whose id hashes to its shard (vocabularies always come from the whole train split, so every
job writes the same ones). Each job's items, in manifest order, fill numbered output shards
of `rows_per_shard` rows; a shard is written atomically and a killed run resumes at the
first shard not finished.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, write_json_atomic
from ..cache import StageRun, open_stage
from ..data.manifest import Manifest
from ..errors import InputError
from ..devices import resolve_device, resolve_precision
from ..progress import progress
from ..shards import resolve_shard, shard_of
from .shards import (clear_partial_files, record_batch, shard_name, shard_schema, write_shard)
from .parallel import (BatchEncoder, ChunkResult, ChunkTokenizer, EncodedChunk, add_stats,
                       count_chunk, default_workers, encode_chunk, tokenize_chunk)
from .tokenize import TextStats

log = logging.getLogger(__name__)

STAGE = "embed-text"
FORMAT_VERSION = 1
FIELDS = ("product", "review")
MODES = ("static", "ids", "features")
LANGUAGES = ("auto", "en", "id")
_TOKENIZE_CHUNK = 1000
_PROGRESS_DIR = ".progress"


@dataclass
class FieldItems:
    """One field's items: ids, texts and splits, in manifest order."""

    name: str
    ids: list[str]
    texts: list[object]
    splits: list[str]

    def select(self, keep: list[bool]) -> "FieldItems":
        return FieldItems(self.name, [v for v, k in zip(self.ids, keep) if k],
                          [v for v, k in zip(self.texts, keep) if k],
                          [v for v, k in zip(self.splits, keep) if k])


@dataclass
class FieldResult:
    """What one field's output pass counted."""

    rows: int = 0
    tokens: int = 0
    unk_tokens: int = 0
    shards: int = 0
    stats: TextStats = field(default_factory=TextStats)

    def as_dict(self) -> dict:
        return {"rows": self.rows, "tokens": self.tokens, "unk_tokens": self.unk_tokens,
                "shards": self.shards, **{f"{k}_texts": v for k, v in self.stats.as_dict().items()
                                          if k != "texts"},
                "examples": self.stats.examples}


def field_items(manifest: Manifest) -> dict[str, FieldItems]:
    products, reviews = manifest.products, manifest.reviews
    return {
        "product": FieldItems("product", products["product_id"].astype(str).tolist(),
                              products["text"].tolist(), products["split"].astype(str).tolist()),
        "review": FieldItems("review", reviews["review_id"].astype(str).tolist(),
                             reviews["text"].tolist(), reviews["split"].astype(str).tolist()),
    }


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(start + size, n)


def embed_text(manifest: str | Path, *, mode: str = "static", language: str = "auto",
               lowercase: bool = True, max_length: int = 128, min_freq: int = 5,
               shared_vocab: bool = False, vectors: str | None = None,
               vectors_cache: str | Path | None = None, seed: int = 0, model: str | None = None,
               layers: str = "-1", batch_size: int = 32, device: str = "auto",
               precision: str = "auto", rows_per_shard: int = 5000,
               num_shards: int | None = None, shard_index: int | None = None,
               out: str | Path | None = None, cache_dir: str | Path = "cache",
               force: bool = False, workers: int | None = None) -> StageRun:
    """Run the stage; returns the finished `StageRun` (its MANIFEST.json holds the counts).

    `workers`: tokenizer processes in static mode (None: the cores this process may use);
    the output is the same for any number."""
    if mode not in MODES:
        raise InputError(f"unknown mode '{mode}'", field="--mode", hint=f"one of {MODES}")
    if max_length < 1 or rows_per_shard < 1 or batch_size < 1:
        raise InputError("--max-length, --rows-per-shard and --batch-size must be positive")
    if mode == "static" and model:
        raise InputError("--model is for --mode ids or features", field="--model",
                         hint="drop --model, or pass --mode ids/features")
    if mode != "static" and vectors:
        raise InputError("--vectors is for --mode static", field="--vectors",
                         hint="drop --vectors, or use --mode static")
    manifest_path = Path(manifest)
    data = Manifest(manifest_path)
    num_shards, shard_index = resolve_shard(num_shards, shard_index)
    settings: dict = {"mode": mode, "max_length": max_length, "rows_per_shard": rows_per_shard,
                      "num_shards": num_shards, "shard_index": shard_index}
    inputs: dict = {"manifest": manifest_path}
    source = None
    if mode == "static":
        from .vectors import NAMED_SOURCES, resolve_source

        if not vectors:
            raise InputError("static mode needs a vectors source", field="--vectors",
                             hint="pass a GloVe .txt, .vec, fastText .bin, .npy, or "
                                  "glove-6b-50d-package; or use --mode ids/features")
        source = resolve_source(vectors)
        if language == "auto":
            language = "id" if data.dataset == "lazada" else "en"
        # The file's content counts through `inputs`; its name, not its place, in settings.
        named = source.label in NAMED_SOURCES
        settings.update(language=language, lowercase=lowercase, min_freq=min_freq,
                        shared_vocab=shared_vocab, seed=seed,
                        vectors=source.label if named else source.path.name)
        inputs["vectors"] = source.path
        if source.words_path is not None:
            inputs["vector_words"] = source.words_path
    else:
        if not model:
            raise InputError(f"--mode {mode} needs a transformer", field="--model",
                             hint="pass a local model folder (or a hub name when online)")
        settings["model"] = Path(model).name if Path(model).exists() else str(model)
        if Path(model).exists():
            inputs["model"] = Path(model)
        if mode == "features":
            from .transformer import parse_layers

            try:
                settings["layers"] = parse_layers(layers)
            except ValueError as exc:
                raise InputError(str(exc), field="--layers") from exc
            # Checked before any folder is made; the precision actually used ("auto" is fp16
            # on a GPU, fp32 on a CPU) goes into the fingerprint, as the outputs differ.
            precision = resolve_precision(precision, resolve_device(device))
            settings["precision"] = precision

    run = open_stage(STAGE, dataset=data.name, settings=settings, inputs=inputs,
                     format_version=FORMAT_VERSION, out=out, cache_dir=cache_dir, force=force)
    if run.complete:
        log.info("embed-text: a finished output with the same settings exists in %s", run.path)
        return run
    vectors_cache = Path(vectors_cache) if vectors_cache else Path(cache_dir) / "vectors"
    with run.computing(vectors_cache if mode == "static" else None):
        removed = clear_partial_files(run.path)
        if removed:
            log.info("removed %d partial file(s) left by an earlier run", removed)

        items = field_items(data)
        mine = {name: f.select([shard_of(i, num_shards) == shard_index for i in f.ids])
                for name, f in items.items()}
        try:
            if mode == "static":
                extra = _run_static(run, items, mine, source, settings, vectors_cache,
                                    batch_size, force,
                                    workers=default_workers() if workers is None else workers)
            else:
                extra = _run_transformer(run, mine, settings, model, batch_size, device, precision)
        except InputError:
            run.discard_unstarted()  # a refused input leaves no folder behind
            raise
        results: dict[str, FieldResult] = extra.pop("results")
        counts = {f"{name}_{key}": value for name, r in results.items()
                  for key, value in r.as_dict().items() if key != "examples"}
        counts["items"] = sum(len(f.ids) for f in mine.values())
        run.finish(counts, fields={name: r.as_dict() for name, r in results.items()}, **extra)
    return run


# --------------------------------------------------------------------------------------------
# static vectors


def _text_chunks(items: FieldItems, start: int, stop: int):
    """items[start:stop] as (texts, ids) chunks of _TOKENIZE_CHUNK."""
    for lo, hi in _chunks(stop - start, _TOKENIZE_CHUNK):
        yield items.texts[start + lo:start + hi], items.ids[start + lo:start + hi]


def _count_train_tokens(chunker: ChunkTokenizer, items: FieldItems) -> Counter:
    """Token counts of the train split (after truncation: the tokens a model will see)."""
    counts: Counter = Counter()
    train = items.select([s == "train" for s in items.splits])
    bar = progress(total=len(train.ids), desc=f"vocabulary ({items.name})", unit="text")
    chunks = _text_chunks(train, 0, len(train.ids))
    # Chunks come back in order, so the counts are the same, key order included.
    for part, (texts, _) in zip(chunker.map(chunks, count_chunk),
                                _text_chunks(train, 0, len(train.ids))):
        counts.update(part)
        bar.update(len(texts))
    bar.close()
    return counts


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array, allow_pickle=False)


def _run_static(run: StageRun, items: dict[str, FieldItems], mine: dict[str, FieldItems],
                source, settings: dict, vectors_cache: Path, batch_size: int,
                force: bool = False, workers: int = 1) -> dict:
    from .tokenize import SpacyTokenizer

    tokenizer = SpacyTokenizer(settings["language"], lowercase=settings["lowercase"],
                               max_length=settings["max_length"])
    with ChunkTokenizer(tokenizer, workers) as chunker:
        return _static_with(run, items, mine, source, settings, vectors_cache, chunker, force)


def _static_with(run: StageRun, items: dict[str, FieldItems], mine: dict[str, FieldItems],
                 source, settings: dict, vectors_cache: Path, chunker: ChunkTokenizer,
                 force: bool) -> dict:
    from .vectors import check_coverage, embedding_matrix, load_vectors
    from .vocab import UNK_ID, Vocabulary

    tokenizer = chunker.tokenizer
    counts = {name: _count_train_tokens(chunker, f) for name, f in items.items()}
    if settings["shared_vocab"]:
        shared = Vocabulary.fit(counts["product"] + counts["review"], settings["min_freq"])
        vocabs = {name: shared for name in FIELDS}
    else:
        vocabs = {name: Vocabulary.fit(counts[name], settings["min_freq"]) for name in FIELDS}

    started = time.perf_counter()
    table = load_vectors(source, vectors_cache, force=force)
    load_seconds = round(time.perf_counter() - started, 3)
    log.info("vectors: %d words x %d from %s in %.2f s (%s)", len(table), table.dim,
             source.label, load_seconds, table.info.get("cache", "bindings"))
    coverage = {}
    matrices: dict[int, np.ndarray] = {}
    for name in FIELDS:
        vocab = vocabs[name]
        field_counts = counts["product"] + counts["review"] if settings["shared_vocab"] \
            else counts[name]
        if id(vocab) not in matrices:
            matrices[id(vocab)], cov = embedding_matrix(vocab.tokens, field_counts, table,
                                                        seed=settings["seed"])
            coverage[name] = cov.as_dict()
        else:
            coverage[name] = coverage["product"]
        check_coverage(name, coverage[name], settings["min_freq"], counts[name], source.label)
        vocab.save(run.path / f"vocab-{name}.txt")
        _save_npy(run.path / f"vectors-{name}.npy", matrices[id(vocab)])

    results = {}
    for name in FIELDS:
        vocab = vocabs[name]
        metadata = {"mode": "static", "field": name, "tokenizer": tokenizer.describe(),
                    "vocabulary": f"vocab-{name}.txt", "vectors_file": f"vectors-{name}.npy",
                    "vector_source": source.describe(), "dim": table.dim, "settings": settings,
                    "pad_id": 0, "unk_id": UNK_ID}
        schema = shard_schema("static", None, metadata)

        def encode(results_chunk, vocab=vocab):
            return vocab.ids_array([token for r in results_chunk for token in r.tokens])

        results[name] = _write_field(run, mine[name], chunker, schema, encode,
                                     unk_id=UNK_ID)
    return {"results": results, "mode": "static", "dim": table.dim,
            "tokenizer": tokenizer.describe(), "vector_source": source.describe(),
            "vectors_info": {k: v for k, v in table.info.items() if k != "path"},
            "vectors_load_seconds": load_seconds, "coverage": coverage,
            "vocab_sizes": {name: len(vocabs[name]) for name in FIELDS}}


# --------------------------------------------------------------------------------------------
# shard writing shared by the modes


def _progress_path(run: StageRun, name: str, index: int) -> Path:
    return run.path / _PROGRESS_DIR / f"{shard_name(name, index)}.json"


def _finished_shard(run: StageRun, name: str, index: int) -> dict | None:
    """The saved counts of a shard an earlier run finished, else None."""
    progress_file = _progress_path(run, name, index)
    if (run.path / shard_name(name, index)).is_file() and progress_file.is_file():
        return json.loads(progress_file.read_text())
    return None


def _record_shard(run: StageRun, name: str, index: int, counts: dict) -> None:
    write_json_atomic(_progress_path(run, name, index), counts)


def _record_chunk(run: StageRun, chunk: ChunkResult | EncodedChunk, stats: TextStats) -> None:
    """A tokenized chunk's counts into `stats`, its failed items into the run's failures."""
    add_stats(stats, chunk.stats)
    for failure in chunk.failures:
        run.add_failure(failure["item"], "tokenizer failed", error=failure["error"])


def _write_shards(run: StageRun, items: FieldItems, desc: str, write_one) -> FieldResult:
    """Fill one field's numbered shards of `rows_per_shard` items, skipping the shards an
    earlier run finished. `write_one(path, start, stop, bar)` writes items[start:stop] to
    `path` and returns what it counted (a FieldResult)."""
    result = FieldResult()
    bar = progress(total=len(items.ids), desc=desc, unit="text")
    spans = list(_chunks(len(items.ids), run.settings["rows_per_shard"])) or [(0, 0)]
    for index, (start, stop) in enumerate(spans):
        done = _finished_shard(run, items.name, index)
        if done is None:
            counts = write_one(run.path / shard_name(items.name, index), start, stop, bar)
            done = _shard_counts(counts)
            _record_shard(run, items.name, index, done)
        else:
            bar.update(stop - start)
        _add_counts(result, done)
    bar.close()
    return result


def _write_field(run: StageRun, items: FieldItems, chunker: ChunkTokenizer, schema, encode,
                 unk_id: int | None = None) -> FieldResult:
    """Static and ids modes: tokenize, encode and lay out in chunks (in the tokenizer's
    processes), rows in manifest order."""
    chunker.share(BatchEncoder(schema, encode, unk_id))

    def write_one(path: Path, start: int, stop: int, bar) -> FieldResult:
        counts = FieldResult()

        def batches():
            if start == stop:
                yield record_batch(schema, [], [], token_ids=[])
            for chunk, (_, ids) in zip(chunker.map(_text_chunks(items, start, stop),
                                                   encode_chunk),
                                       _text_chunks(items, start, stop)):
                _record_chunk(run, chunk, counts.stats)
                counts.rows += chunk.rows
                counts.tokens += chunk.tokens
                counts.unk_tokens += chunk.unk_tokens
                bar.update(len(ids))
                yield chunk.batch

        write_shard(path, schema, batches())
        return counts

    return _write_shards(run, items, f"{items.name} shards", write_one)


def _shard_counts(counts: FieldResult) -> dict:
    return {"rows": counts.rows, "tokens": counts.tokens, "unk_tokens": counts.unk_tokens,
            "stats": counts.stats.as_dict(), "examples": counts.stats.examples}


def _add_counts(result: FieldResult, done: dict) -> None:
    result.rows += done["rows"]
    result.tokens += done["tokens"]
    result.unk_tokens += done["unk_tokens"]
    result.shards += 1
    for key in ("texts", "empty", "cleaned", "truncated"):
        setattr(result.stats, key, getattr(result.stats, key) + done["stats"][key])
    for kind, ids in done.get("examples", {}).items():
        for item_id in ids:
            result.stats.note(kind, item_id)


# --------------------------------------------------------------------------------------------
# transformers


def _run_transformer(run: StageRun, mine: dict[str, FieldItems], settings: dict, model: str,
                     batch_size: int, device: str, precision: str) -> dict:
    from .tokenize import TransformerTokenizer

    from .transformer import MODEL_LOAD_ERRORS, tokenizer_problem

    try:
        tokenizer = TransformerTokenizer(model, max_length=settings["max_length"])
        problem = tokenizer_problem(model, tokenizer.describe()["vocab_size"])
    except MODEL_LOAD_ERRORS as exc:
        raise InputError(f"cannot load the tokenizer: {exc}", field="--model",
                         hint="pass a local model folder with a fast tokenizer "
                              "(tokenizer.json); hub names need a network") from exc
    if problem:
        raise InputError(problem, file=str(model), field="--model",
                         hint="copy the model's tokenizer files (tokenizer.json or vocab.txt, "
                              "tokenizer_config.json) into the folder")
    mode = settings["mode"]
    results = {}
    extra: dict = {"mode": mode, "tokenizer": tokenizer.describe()}
    if mode == "ids":
        extra["dim"] = None
        for name in FIELDS:
            metadata = {"mode": "ids", "field": name, "tokenizer": tokenizer.describe(),
                        "settings": settings, "pad_id": tokenizer.pad_id}
            schema = shard_schema("ids", None, metadata)
            results[name] = _write_field(run, mine[name], ChunkTokenizer(tokenizer), schema,
                                         lambda chunk: [r.ids for r in chunk])
        return {"results": results, **extra}

    from .transformer import TransformerEncoder

    try:
        encoder = TransformerEncoder(model, layers=settings["layers"], device=device,
                                     precision=precision, pad_id=tokenizer.pad_id)
    except MODEL_LOAD_ERRORS as exc:
        raise InputError(f"cannot load the model: {exc}", file=str(model), field="--model",
                         hint="a weights file may be truncated or damaged: copy or download "
                              "the model again") from exc
    extra.update(dim=encoder.hidden_size, encoder=encoder.describe())
    for name in FIELDS:
        metadata = {"mode": "features", "field": name, "tokenizer": tokenizer.describe(),
                    "encoder": encoder.describe(), "dim": encoder.hidden_size,
                    "settings": settings}
        schema = shard_schema("features", encoder.hidden_size, metadata)
        results[name] = _write_feature_field(run, mine[name], tokenizer, encoder, schema,
                                             batch_size)
    return {"results": results, **extra}


def _encode_resilient(encoder, sequences: list[list[int]]) -> list[np.ndarray]:
    """Encode a batch; on running out of GPU memory, in halves."""
    import torch

    try:
        return encoder.encode_batch(sequences)
    except torch.cuda.OutOfMemoryError:
        if len(sequences) == 1:
            raise
        torch.cuda.empty_cache()
        half = len(sequences) // 2
        return (_encode_resilient(encoder, sequences[:half])
                + _encode_resilient(encoder, sequences[half:]))


def _write_feature_field(run: StageRun, items: FieldItems, tokenizer, encoder, schema,
                         batch_size: int) -> FieldResult:
    """Features mode: each shard's texts are encoded in length-sorted batches and written
    batch by batch, so rows inside a shard come longest first (join on `id`)."""
    from .transformer import check_finite_features, length_sorted_batches

    def write_one(path: Path, start: int, stop: int, bar) -> FieldResult:
        counts = FieldResult()
        ids = items.ids[start:stop]
        tokenized, kept = [], []
        for lo, hi in _chunks(len(ids), _TOKENIZE_CHUNK):
            chunk = tokenize_chunk(tokenizer, items.texts[start + lo:start + hi], ids[lo:hi])
            _record_chunk(run, chunk, counts.stats)
            tokenized.extend(chunk.tokenized)
            kept.extend(lo + k for k in chunk.kept)
        kept_ids = [ids[k] for k in kept]

        def batches():
            if not tokenized:
                yield record_batch(schema, [], [], features=[])
            for batch in length_sorted_batches([len(t) for t in tokenized], batch_size):
                features = _encode_resilient(encoder, [tokenized[i].ids for i in batch])
                check_finite_features(features, [kept_ids[i] for i in batch], encoder)
                counts.rows += len(batch)
                counts.tokens += sum(len(tokenized[i]) for i in batch)
                bar.update(len(batch))
                yield record_batch(schema, [kept_ids[i] for i in batch],
                                   [tokenized[i] for i in batch], features=features)

        write_shard(path, schema, batches())
        bar.update(len(ids) - len(kept))  # the texts the tokenizer failed on
        return counts

    return _write_shards(run, items, f"{items.name} features", write_one)
