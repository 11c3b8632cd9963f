"""The three modes of `embed-text`, one class each.

A mode `check`s the options that belong to other modes (before anything is read), then
`configure`s the stage: its settings and inputs, which enter the fingerprint, checked before
the stage folder is made. `written_folders` names the folders it writes besides the stage
folder (a full disk there is named too). `run` writes both fields' shards (and, in static mode,
the vocabularies and vectors) into the folder and returns what the MANIFEST.json adds, with the
per-field counts under "results".

- `StaticMode`: spaCy rule-based tokens -> vocabulary ids; vocabularies fitted on the train
  split; the embedding matrix of each vocabulary from a GloVe/word2vec/fastText/.npy source.
- `IdsMode`: a transformer's token ids and attention mask, for fine-tuning.
- `FeaturesMode`: frozen hidden states of a transformer per token, float16.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache import StageRun
from ..errors import InputError
from ..devices import resolve_device, resolve_precision
from ..faults import OutputFolder
from ..progress import progress
from .embed_writing import (FieldItems, FieldResult, chunks, record_chunk, text_chunks,
                            write_field, write_shards)
from .parallel import ChunkTokenizer, count_chunk, tokenize_chunk
from .shards import record_batch, shard_schema, write_shard
from .store import FIELDS, save_vectors, vectors_name, vocab_name

log = logging.getLogger(__name__)


@dataclass
class EmbedOptions:
    """The options of `embed_text` that some mode reads."""

    language: str = "auto"
    lowercase: bool = True
    min_freq: int = 5
    shared_vocab: bool = False
    vectors: str | None = None
    vectors_cache: str | Path | None = None
    seed: int = 0
    model: str | None = None
    layers: str = "-1"
    batch_size: int = 32
    device: str = "auto"
    precision: str = "auto"
    cache_dir: str | Path = "cache"
    force: bool = False
    workers: int | None = None


class StaticMode:
    name = "static"

    def __init__(self, options: EmbedOptions):
        self.options = options
        self.source = None

    def check(self) -> None:
        if self.options.model:
            raise InputError("--model is for --mode ids or features", field="--model",
                             hint="drop --model, or pass --mode ids/features")

    def configure(self, data, settings: dict, inputs: dict) -> None:
        from .vectors import NAMED_SOURCES, resolve_source

        options = self.options
        if not options.vectors:
            raise InputError("static mode needs a vectors source", field="--vectors",
                             hint="pass a GloVe .txt, .vec, fastText .bin, .npy, or "
                                  "glove-6b-50d-package; or use --mode ids/features")
        self.source = source = resolve_source(options.vectors)
        language = options.language
        if language == "auto":
            language = "id" if data.dataset == "lazada" else "en"
        # The file's content counts through `inputs`; its name, not its place, in settings.
        named = source.label in NAMED_SOURCES
        settings.update(language=language, lowercase=options.lowercase,
                        min_freq=options.min_freq, shared_vocab=options.shared_vocab,
                        seed=options.seed,
                        vectors=source.label if named else source.path.name)
        inputs["vectors"] = source.path
        if source.words_path is not None:
            inputs["vector_words"] = source.words_path

    def run(self, run: StageRun, items: dict[str, FieldItems],
            mine: dict[str, FieldItems]) -> dict:
        from .parallel import default_workers
        from .tokenize import SpacyTokenizer

        settings = run.settings
        tokenizer = SpacyTokenizer(settings["language"], lowercase=settings["lowercase"],
                                   max_length=settings["max_length"])
        workers = default_workers() if self.options.workers is None else self.options.workers
        with ChunkTokenizer(tokenizer, workers) as chunker:
            return self._run_with(run, items, mine, chunker)

    def _vectors_cache(self) -> Path:
        return Path(self.options.vectors_cache or Path(self.options.cache_dir) / "vectors")

    def written_folders(self) -> list[OutputFolder]:
        """The folders besides the stage folder that `run` writes: the vectors cache."""
        return [OutputFolder(self._vectors_cache(), "--vectors-cache")]

    def _run_with(self, run: StageRun, items: dict[str, FieldItems],
                  mine: dict[str, FieldItems], chunker: ChunkTokenizer) -> dict:
        from .vectors import check_coverage, embedding_matrix, load_vectors
        from .vocab import UNK_ID, Vocabulary

        settings, source = run.settings, self.source
        tokenizer = chunker.tokenizer
        counts = {name: _count_train_tokens(chunker, f) for name, f in items.items()}
        if settings["shared_vocab"]:
            shared = Vocabulary.fit(counts["product"] + counts["review"], settings["min_freq"])
            vocabs = {name: shared for name in FIELDS}
        else:
            vocabs = {name: Vocabulary.fit(counts[name], settings["min_freq"]) for name in FIELDS}

        started = time.perf_counter()
        table = load_vectors(source, self._vectors_cache(), force=self.options.force)
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
            check_coverage(name, coverage[name], settings["min_freq"], counts[name],
                           source.label)
            vocab.save(run.path / vocab_name(name))
            save_vectors(run.path / vectors_name(name), matrices[id(vocab)])

        results = {}
        for name in FIELDS:
            vocab = vocabs[name]
            metadata = {"mode": "static", "field": name, "tokenizer": tokenizer.describe(),
                        "vocabulary": vocab_name(name), "vectors_file": vectors_name(name),
                        "vector_source": source.describe(), "dim": table.dim,
                        "settings": settings, "pad_id": 0, "unk_id": UNK_ID}
            schema = shard_schema("static", None, metadata)

            def encode(results_chunk, vocab=vocab):
                return vocab.ids_array([token for r in results_chunk for token in r.tokens])

            results[name] = write_field(run, mine[name], chunker, schema, encode,
                                        unk_id=UNK_ID)
        return {"results": results, "mode": "static", "dim": table.dim,
                "tokenizer": tokenizer.describe(), "vector_source": source.describe(),
                "vectors_info": {k: v for k, v in table.info.items() if k != "path"},
                "vectors_load_seconds": load_seconds, "coverage": coverage,
                "vocab_sizes": {name: len(vocabs[name]) for name in FIELDS}}


def _count_train_tokens(chunker: ChunkTokenizer, items: FieldItems) -> Counter:
    """Token counts of the train split (after truncation: the tokens a model will see)."""
    counts: Counter = Counter()
    train = items.select([s == "train" for s in items.splits])
    with progress(total=len(train.ids), desc=f"vocabulary ({items.name})", unit="text") as bar:
        # Chunks come back in order, so the counts are the same, key order included.
        for part, (texts, _) in zip(chunker.map(text_chunks(train, 0, len(train.ids)),
                                                count_chunk),
                                    text_chunks(train, 0, len(train.ids))):
            counts.update(part)
            bar.update(len(texts))
    return counts


class IdsMode:
    """A transformer's token ids; FeaturesMode adds its frozen hidden states."""

    name = "ids"

    def __init__(self, options: EmbedOptions):
        self.options = options

    def check(self) -> None:
        if self.options.vectors:
            raise InputError("--vectors is for --mode static", field="--vectors",
                             hint="drop --vectors, or use --mode static")

    def written_folders(self) -> list[OutputFolder]:
        """The folders besides the stage folder that `run` writes: none."""
        return []

    def configure(self, data, settings: dict, inputs: dict) -> None:
        model = self.options.model
        if not model:
            raise InputError(f"--mode {self.name} needs a transformer", field="--model",
                             hint="pass a local model folder (or a hub name when online)")
        settings["model"] = Path(model).name if Path(model).exists() else str(model)
        if Path(model).exists():
            inputs["model"] = Path(model)

    def _tokenizer(self, settings: dict):
        from .tokenize import TransformerTokenizer
        from .transformer import MODEL_LOAD_ERRORS, tokenizer_problem

        model = self.options.model
        try:
            tokenizer = TransformerTokenizer(model, max_length=settings["max_length"])
            problem = tokenizer_problem(model, tokenizer.describe()["vocab_size"])
        except MODEL_LOAD_ERRORS as exc:
            raise InputError(f"cannot load the tokenizer: {exc}", field="--model",
                             hint="pass a local model folder with a fast tokenizer "
                                  "(tokenizer.json); hub names need a network") from exc
        if problem:
            raise InputError(problem, file=str(model), field="--model",
                             hint="copy the model's tokenizer files (tokenizer.json or "
                                  "vocab.txt, tokenizer_config.json) into the folder")
        return tokenizer

    def run(self, run: StageRun, items: dict[str, FieldItems],
            mine: dict[str, FieldItems]) -> dict:
        settings = run.settings
        tokenizer = self._tokenizer(settings)
        results = {}
        for name in FIELDS:
            metadata = {"mode": "ids", "field": name, "tokenizer": tokenizer.describe(),
                        "settings": settings, "pad_id": tokenizer.pad_id}
            schema = shard_schema("ids", None, metadata)
            results[name] = write_field(run, mine[name], ChunkTokenizer(tokenizer), schema,
                                        lambda chunk: [r.ids for r in chunk])
        return {"results": results, "mode": "ids", "tokenizer": tokenizer.describe(),
                "dim": None}


class FeaturesMode(IdsMode):
    name = "features"

    def configure(self, data, settings: dict, inputs: dict) -> None:
        from .transformer import parse_layers

        super().configure(data, settings, inputs)
        try:
            settings["layers"] = parse_layers(self.options.layers)
        except ValueError as exc:
            raise InputError(str(exc), field="--layers") from exc
        # Checked before any folder is made; the precision actually used ("auto" is fp16
        # on a GPU, fp32 on a CPU) goes into the fingerprint, as the outputs differ.
        settings["precision"] = resolve_precision(self.options.precision,
                                                  resolve_device(self.options.device))

    def run(self, run: StageRun, items: dict[str, FieldItems],
            mine: dict[str, FieldItems]) -> dict:
        from .transformer import MODEL_LOAD_ERRORS, TransformerEncoder

        settings, options = run.settings, self.options
        tokenizer = self._tokenizer(settings)
        try:
            encoder = TransformerEncoder(options.model, layers=settings["layers"],
                                         device=options.device,
                                         precision=settings["precision"],
                                         pad_id=tokenizer.pad_id)
        except MODEL_LOAD_ERRORS as exc:
            raise InputError(f"cannot load the model: {exc}", file=str(options.model),
                             field="--model",
                             hint="a weights file may be truncated or damaged: copy or "
                                  "download the model again") from exc
        results = {}
        for name in FIELDS:
            metadata = {"mode": "features", "field": name, "tokenizer": tokenizer.describe(),
                        "encoder": encoder.describe(), "dim": encoder.hidden_size,
                        "settings": settings}
            schema = shard_schema("features", encoder.hidden_size, metadata)
            results[name] = _write_feature_field(run, mine[name], tokenizer, encoder, schema,
                                                 options.batch_size)
        return {"results": results, "mode": "features", "tokenizer": tokenizer.describe(),
                "dim": encoder.hidden_size, "encoder": encoder.describe()}


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
    from . import embed_writing
    from .transformer import check_finite_features, length_sorted_batches

    def write_one(path: Path, start: int, stop: int, bar) -> FieldResult:
        counts = FieldResult()
        ids = items.ids[start:stop]
        tokenized, kept = [], []
        for lo, hi in chunks(len(ids), embed_writing.TOKENIZE_CHUNK):
            chunk = tokenize_chunk(tokenizer, items.texts[start + lo:start + hi], ids[lo:hi])
            record_chunk(run, chunk, counts.stats)
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

    return write_shards(run, items, f"{items.name} features", write_one)


MODE_CLASSES = {mode.name: mode for mode in (StaticMode, IdsMode, FeaturesMode)}
