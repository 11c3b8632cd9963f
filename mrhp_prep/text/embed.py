"""The `embed-text` stage: tokenize product and review text and embed it, into Arrow shards.

Three modes (`embed_modes.py`, one class each):

- `static`: spaCy rule-based tokens -> vocabulary ids; vocabularies fitted on the train
  split; the embedding matrix of each vocabulary from a GloVe/word2vec/fastText/.npy source.
- `ids`: a transformer's token ids and attention mask, for fine-tuning.
- `features`: frozen hidden states of a transformer per token, float16.

Work is split by id for job arrays (`--num-shards/--shard-index`): a job embeds the items whose
id hashes to its shard (vocabularies always come from the whole train split, so every job
writes the same ones). Each job's items, in manifest order, fill numbered output shards of
`rows_per_shard` rows; a shard is written atomically and a killed run resumes at the first
shard not finished (`embed_writing.py`; `open_stage` removes what it was writing). The folder's
files are listed in `store.py`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..cache import StageRun, open_stage
from ..data.manifest import Manifest
from ..errors import InputError
from ..shards import resolve_shard, shard_of
from ..verify import file_record, file_records
from .embed_modes import MODE_CLASSES, EmbedOptions
from .embed_writing import FieldItems, FieldResult
from .store import FIELDS, STAGE, static_files

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODES = tuple(MODE_CLASSES)
LANGUAGES = ("auto", "en", "id")
__all__ = ["FIELDS", "FORMAT_VERSION", "MODES", "STAGE", "embed_text", "field_items"]


def field_items(manifest: Manifest) -> dict[str, FieldItems]:
    products, reviews = manifest.products, manifest.reviews
    return {
        "product": FieldItems("product", products["product_id"].astype(str).tolist(),
                              products["text"].tolist(), products["split"].astype(str).tolist()),
        "review": FieldItems("review", reviews["review_id"].astype(str).tolist(),
                             reviews["text"].tolist(), reviews["split"].astype(str).tolist()),
    }


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
    handler = MODE_CLASSES[mode](EmbedOptions(
        language=language, lowercase=lowercase, min_freq=min_freq, shared_vocab=shared_vocab,
        vectors=vectors, vectors_cache=vectors_cache, seed=seed, model=model, layers=layers,
        batch_size=batch_size, device=device, precision=precision, cache_dir=cache_dir,
        force=force, workers=workers))
    handler.check()
    manifest_path = Path(manifest)
    data = Manifest(manifest_path)
    num_shards, shard_index = resolve_shard(num_shards, shard_index)
    settings: dict = {"mode": mode, "max_length": max_length, "rows_per_shard": rows_per_shard,
                      "num_shards": num_shards, "shard_index": shard_index}
    inputs: dict = {"manifest": manifest_path}
    handler.configure(data, settings, inputs)

    run = open_stage(STAGE, dataset=data.name, settings=settings, inputs=inputs,
                     format_version=FORMAT_VERSION, out=out, cache_dir=cache_dir, force=force)
    if run.complete:
        log.info("embed-text: a finished output with the same settings exists in %s", run.path)
        return run
    with run.computing(*handler.written_folders()):
        items = field_items(data)
        mine = {name: f.select([shard_of(i, num_shards) == shard_index for i in f.ids])
                for name, f in items.items()}
        try:
            extra = handler.run(run, items, mine)
        except InputError:
            run.discard_unstarted()  # a refused input leaves no folder behind
            raise
        results: dict[str, FieldResult] = extra.pop("results")
        counts = {f"{name}_{key}": value for name, r in results.items()
                  for key, value in r.as_dict().items() if key != "examples"}
        counts["items"] = sum(len(f.ids) for f in mine.values())
        # Each shard's record as written (hashed from disk only for an older version's shard).
        shards = {name: record or file_record(run.path / name) for result in results.values()
                  for name, record in result.files.items()}
        files = {**shards, **file_records(run.path, static_files(run.path))}
        run.finish(counts, fields={name: r.as_dict() for name, r in results.items()},
                   files=dict(sorted(files.items())), **extra)
    return run
