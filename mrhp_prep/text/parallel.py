"""Tokenizing chunks of manifest texts, in worker processes when more than one core is given.

spaCy's tokenizer runs on one core; at hundreds of thousands of reviews it is what the static
mode of `embed-text` waits for. `ChunkTokenizer.map(chunks)` tokenizes chunks of texts in
`workers` processes and yields their results in the order of the chunks, so the output is
the same as with one worker. For the shards the workers also encode the tokens and lay
them out as Arrow record batches (`encode_chunk`), so the writing process only writes.
The workers are forked from this process with its loaded tokenizer (no second load); where
fork is not available the chunks run in this process.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import sys
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from ..workers import ignore_interrupts, stop_pool
from .tokenize import TextStats, TokenizedText, tokenize_texts

log = logging.getLogger(__name__)

_SEPARATOR = "\x00"      # joins a chunk's tokens for the trip between processes


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. a job's allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:              # not on Linux
        return os.cpu_count() or 1


def default_workers() -> int:
    """Tokenizer processes when none are asked for: the available cores. The main process,
    which writes the record batches they send, runs beside them."""
    return available_cores()


@dataclass
class ChunkResult:
    """One chunk's tokens: `tokenized[k]` belongs to the chunk's item `kept[k]`; the items
    the tokenizer failed on are in `failures` (item, error)."""

    tokenized: list
    kept: list[int]
    failures: list[dict] = field(default_factory=list)
    stats: TextStats = field(default_factory=TextStats)

    # Sent between processes as flat columns (the tokens as one string): pickling thousands
    # of small TokenizedText objects cost the main process more than tokenizing saved.
    def __getstate__(self) -> dict:
        texts = self.tokenized
        tokens = [x for t in texts for x in t.tokens]
        joined = _SEPARATOR.join(tokens)
        with_ids = bool(texts) and all(t.ids is not None for t in texts)
        return {"lengths": [len(t) for t in texts], "truncated": [t.truncated for t in texts],
                # cleaned texts hold no NUL; a token that did would travel as a list
                "tokens": tokens if joined.count(_SEPARATOR) != max(len(tokens) - 1, 0)
                else joined,
                "starts": np.asarray([x for t in texts for x in t.starts], np.int32),
                "ends": np.asarray([x for t in texts for x in t.ends], np.int32),
                "ids": (np.asarray([x for t in texts for x in t.ids], np.int64)
                        if with_ids else None),
                "kept": self.kept, "failures": self.failures, "stats": self.stats}

    def __setstate__(self, state: dict) -> None:
        starts, ends = state["starts"].tolist(), state["ends"].tolist()
        ids = state["ids"].tolist() if state["ids"] is not None else None
        tokens = state["tokens"]
        if isinstance(tokens, str):
            tokens = tokens.split(_SEPARATOR) if sum(state["lengths"]) else []
        self.tokenized, at = [], 0
        for length, truncated in zip(state["lengths"], state["truncated"]):
            span = slice(at, at + length)
            self.tokenized.append(TokenizedText(tokens[span], starts[span], ends[span],
                                                ids=ids[span] if ids is not None else None,
                                                truncated=truncated))
            at += length
        self.kept, self.failures, self.stats = state["kept"], state["failures"], state["stats"]


def tokenize_chunk(tokenizer, texts: list, ids: list[str]) -> ChunkResult:
    """Tokenize a chunk; if the batch fails, one by one, listing the items that fail."""
    stats = TextStats()
    try:
        return ChunkResult(tokenize_texts(tokenizer, texts, ids, stats), list(range(len(ids))),
                           stats=stats)
    except Exception as exc:  # one bad text must not end a long run
        log.warning("a tokenizer batch failed (%s); retrying its texts one by one", exc)
    result = ChunkResult([], [])
    for position, (text, item_id) in enumerate(zip(texts, ids)):
        try:
            result.tokenized.extend(tokenize_texts(tokenizer, [text], [item_id], result.stats))
            result.kept.append(position)
        except Exception as exc:
            result.failures.append({"item": item_id,
                                    "error": f"{type(exc).__name__}: {exc}"})
    return result


def count_chunk(tokenizer, texts: list, ids: list[str]) -> Counter:
    """A chunk's token counts (the items the tokenizer fails on count nothing). Workers
    send these back instead of the tokens when only the counts are needed: a chunk's
    counts are a few thousand entries, its tokens tens of thousands of strings."""
    counts: Counter = Counter()
    for result in tokenize_chunk(tokenizer, texts, ids).tokenized:
        counts.update(result.tokens)
    return counts


@dataclass(frozen=True)
class BatchEncoder:
    """How a chunk's tokens become rows of a shard: `encode(tokenized)` gives the token ids
    (one array for all rows in static mode), `schema` the shard's columns, `unk_id` the id
    counted as unknown (static mode) or None."""

    schema: object
    encode: Callable
    unk_id: int | None = None


@dataclass
class EncodedChunk:
    """A chunk tokenized, encoded and laid out as one Arrow record batch where it was
    tokenized: only the batch and the counts travel back to the writing process."""

    batch: object                # pyarrow.RecordBatch in the shard's schema
    rows: int
    tokens: int
    unk_tokens: int
    failures: list[dict]
    stats: TextStats


def encode_chunk(tokenizer, texts: list, ids: list[str]) -> EncodedChunk:
    """Tokenize a chunk and build its record batch with the `BatchEncoder` given to
    `ChunkTokenizer.share`."""
    from .shards import record_batch

    encoder: BatchEncoder = _WORKER_STATE
    chunk = tokenize_chunk(tokenizer, texts, ids)
    token_ids = encoder.encode(chunk.tokenized)
    unknown = (int(np.count_nonzero(token_ids == encoder.unk_id))
               if encoder.unk_id is not None else 0)
    kept_ids = [ids[k] for k in chunk.kept]
    return EncodedChunk(record_batch(encoder.schema, kept_ids, chunk.tokenized,
                                     token_ids=token_ids),
                        rows=len(kept_ids), tokens=sum(len(t) for t in chunk.tokenized),
                        unk_tokens=unknown, failures=chunk.failures, stats=chunk.stats)


def add_stats(total: TextStats, part: TextStats) -> None:
    """Add a chunk's counts to `total`; example ids keep their order (chunks come in order)."""
    for key in ("texts", "empty", "cleaned", "truncated"):
        setattr(total, key, getattr(total, key) + getattr(part, key))
    for kind, ids in part.examples.items():
        for item_id in ids:
            total.note(kind, item_id)


_WORKER_TOKENIZER = None
_WORKER_STATE = None        # what `share` gave the tasks (a BatchEncoder for encode_chunk)


def _run_in_worker(task, texts: list, ids: list[str]):
    return task(_WORKER_TOKENIZER, texts, ids)


class ChunkTokenizer:
    """`map(chunks)`: `(texts, ids)` chunks -> ChunkResult per chunk, in order;
    `map(chunks, count_chunk)`: their token counts instead; after `share(BatchEncoder)`,
    `map(chunks, encode_chunk)`: their record batches.

    With `workers > 1` at most `2 * workers` chunks are in flight, so memory stays bounded
    however many chunks there are. Use as a context manager (the processes end on exit).
    """

    def __init__(self, tokenizer, workers: int = 1):
        self.tokenizer = tokenizer
        self.workers = max(1, int(workers))
        self._pool: ProcessPoolExecutor | None = None
        if self.workers > 1 and not (sys.platform.startswith("linux")
                                     and "fork" in multiprocessing.get_all_start_methods()):
            log.info("tokenizing in one process: worker processes need fork here")
            self.workers = 1

    def _start(self) -> ProcessPoolExecutor:
        global _WORKER_TOKENIZER
        if self._pool is None:
            _WORKER_TOKENIZER = self.tokenizer     # inherited by the forked workers
            self._pool = ProcessPoolExecutor(max_workers=self.workers,
                                             mp_context=multiprocessing.get_context("fork"),
                                             initializer=ignore_interrupts)
        return self._pool

    def map(self, chunks: Iterable[tuple[list, list[str]]], task=tokenize_chunk) -> Iterator:
        """`task(tokenizer, texts, ids)` of each chunk, in order (a module-level function,
        so that worker processes can be told which)."""
        chunks = iter(chunks)
        first = next(chunks, None)
        if first is None:
            return
        second = next(chunks, None)
        if self.workers == 1 or second is None:   # one chunk: not worth starting processes
            yield task(self.tokenizer, *first)
            if second is not None:
                yield task(self.tokenizer, *second)
            for texts, ids in chunks:
                yield task(self.tokenizer, texts, ids)
            return
        pool = self._start()
        pending: deque = deque()
        for chunk in itertools.chain((first, second), chunks):
            pending.append(pool.submit(_run_in_worker, task, *chunk))
            if len(pending) >= 2 * self.workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    def share(self, state) -> None:
        """Give the tasks `state` (encode_chunk reads a BatchEncoder). Worker processes see
        only what existed when they were forked, so a running pool is stopped and the next
        `map` forks fresh ones."""
        global _WORKER_STATE
        self.close()
        _WORKER_STATE = state

    def close(self, *, now: bool = False) -> None:
        """End the worker processes: after their work, or `now` (Ctrl-C, an error)."""
        global _WORKER_STATE
        if self._pool is not None:
            if now:
                stop_pool(self._pool)
            else:
                self._pool.shutdown()
            self._pool = None
        _WORKER_STATE = None

    def __enter__(self) -> "ChunkTokenizer":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(now=kind is not None)
