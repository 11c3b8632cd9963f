"""Filling one field's numbered shards for `embed-text`, resumably, whatever the mode.

A field's items, in manifest order, fill shards of `rows_per_shard` rows. Each shard is
written atomically; then `.progress/<shard>.json` records its counts and the shard file's
size and SHA-256 (`verify.record_part`). A resumed run keeps a shard whose file matches that
record and writes again one that does not (cut short, changed) or whose record is damaged,
with a warning that names it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..cache import StageRun
from ..progress import progress
from ..verify import finished_part, record_part
from .parallel import (BatchEncoder, ChunkResult, ChunkTokenizer, EncodedChunk, add_stats,
                       encode_chunk)
from .shards import record_batch, shard_name, write_shard
from .tokenize import TextStats


TOKENIZE_CHUNK = 1000
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
    # shard file name -> its size and SHA-256, as recorded when it was written
    files: dict[str, dict] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"rows": self.rows, "tokens": self.tokens, "unk_tokens": self.unk_tokens,
                "shards": self.shards, **{f"{k}_texts": v for k, v in self.stats.as_dict().items()
                                          if k != "texts"},
                "examples": self.stats.examples}


def chunks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(start + size, n)


def text_chunks(items: FieldItems, start: int, stop: int):
    """items[start:stop] as (texts, ids) chunks of TOKENIZE_CHUNK."""
    for lo, hi in chunks(stop - start, TOKENIZE_CHUNK):
        yield items.texts[start + lo:start + hi], items.ids[start + lo:start + hi]


def record_chunk(run: StageRun, chunk: ChunkResult | EncodedChunk, stats: TextStats) -> None:
    """A tokenized chunk's counts into `stats`, its failed items into the run's failures."""
    add_stats(stats, chunk.stats)
    for failure in chunk.failures:
        run.add_failure(failure["item"], "tokenizer failed", error=failure["error"])


def _progress_path(run: StageRun, name: str, index: int) -> Path:
    return run.path / _PROGRESS_DIR / f"{shard_name(name, index)}.json"


def _finished_shard(run: StageRun, name: str, index: int) -> dict | None:
    """The saved counts of a shard an earlier run finished (its file whole), else None (also
    when its record is damaged: the shard is written again)."""
    return finished_part(run.path / shard_name(name, index), _progress_path(run, name, index),
                         "writing it again")


def write_shards(run: StageRun, items: FieldItems, desc: str, write_one) -> FieldResult:
    """Fill one field's numbered shards of `rows_per_shard` items, skipping the shards an
    earlier run finished. `write_one(path, start, stop, bar)` writes items[start:stop] to
    `path` and returns what it counted (a FieldResult)."""
    result = FieldResult()
    spans = list(chunks(len(items.ids), run.settings["rows_per_shard"])) or [(0, 0)]
    with progress(total=len(items.ids), desc=desc, unit="text") as bar:
        for index, (start, stop) in enumerate(spans):
            path = run.path / shard_name(items.name, index)
            done = _finished_shard(run, items.name, index)
            if done is None:
                counts = write_one(path, start, stop, bar)
                done = record_part(_progress_path(run, items.name, index), path,
                                   **_shard_counts(counts))
            else:
                bar.update(stop - start)
            _add_counts(result, done)
            result.files[path.name] = done.get("file")
    return result


def write_field(run: StageRun, items: FieldItems, chunker: ChunkTokenizer, schema, encode,
                unk_id: int | None = None) -> FieldResult:
    """Static and ids modes: tokenize, encode and lay out in chunks (in the tokenizer's
    processes), rows in manifest order."""
    chunker.share(BatchEncoder(schema, encode, unk_id))

    def write_one(path: Path, start: int, stop: int, bar) -> FieldResult:
        counts = FieldResult()

        def batches():
            if start == stop:
                yield record_batch(schema, [], [], token_ids=[])
            for chunk, (_, ids) in zip(chunker.map(text_chunks(items, start, stop),
                                                   encode_chunk),
                                       text_chunks(items, start, stop)):
                record_chunk(run, chunk, counts.stats)
                counts.rows += chunk.rows
                counts.tokens += chunk.tokens
                counts.unk_tokens += chunk.unk_tokens
                bar.update(len(ids))
                yield chunk.batch

        write_shard(path, schema, batches())
        return counts

    return write_shards(run, items, f"{items.name} shards", write_one)


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
