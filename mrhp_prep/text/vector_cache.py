"""The cache of text vector files (GloVe, word2vec/fastText `.vec`, optionally `.gz`).

A text file is parsed once into `<vectors-cache>/<key>/`:
    vectors.npy   float32 [num_words, dim], opened with `np.load(..., mmap_mode="r")`
    words.arrow   Arrow IPC stream, one string column `word` (row i names vectors[i]),
                  written and read through `arrow_files.py`
    source.json   where it came from: path, format, dim, counts, the source's SHA-256, the
                  size and SHA-256 of vectors.npy and words.arrow (`verify.file_records`),
                  seconds

`key` is the first 16 hex digits of the SHA-256 of the whole source file, computed while
the file is converted (the bytes are hashed as they are read, so it costs no extra pass).
`<vectors-cache>/index/` remembers the hash of each source path with its size, modification
and inode change times, so a later run finds the folder without reading the source; a file
whose size or times changed is hashed again (one quick pass), and a copy of the same file elsewhere
finds the same folder (a first conversion into an empty cache hashes only while converting).
Every read checks the cache files against their records (`verify.verify_files`, which
remembers a check until the file changes, so an unchanged folder is not hashed again): a
damaged or outdated folder is rebuilt, never used. `force=True` rebuilds it in any case.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import time
import warnings
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from ..arrow_files import read_table, write_stream
from ..atomic import write_json_atomic
from ..errors import InputError
from ..verify import FILES_KEY, file_records, file_sha256, verify_files, verify_level
from .vector_table import VectorTable

log = logging.getLogger(__name__)

# 3: files recorded with their sizes (verify.py), words.arrow an IPC stream
CACHE_FORMAT_VERSION = 3
_LINES_PER_CHUNK = 20000
_CACHE_FILES = ("vectors.npy", "words.arrow")
_INDEX_DIR = "index"


class _HashingReader(io.RawIOBase):
    """A raw binary file that hashes every byte read through it."""

    def __init__(self, path: Path):
        self._handle = open(path, "rb")
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self._handle.readinto(buffer)
        if count:
            self.digest.update(memoryview(buffer)[:count])
        return count

    def finish(self) -> str:
        """Hash whatever the parser left unread, then the hex digest of the whole file."""
        for block in iter(lambda: self._handle.read(1 << 20), b""):
            self.digest.update(block)
        return self.digest.hexdigest()

    def release(self) -> None:
        """Close the file (the text wrapper's close leaves it open, for `finish`)."""
        self._handle.close()


# --------------------------------------------------------------------------------------------
# Opening through the cache


def open_cached(path: str | os.PathLike, cache_root: str | os.PathLike, *,
                force: bool = False):
    """Open a text vectors file through its cache folder, converting it when needed.

    Returns a `VectorTable` whose `.info["cache"]` is "hit" or "built".
    """
    path, root = Path(path), Path(cache_root)
    if not force and any(root.glob("*/source.json")):
        # Unknown path, size or time: one quick read finds a copy converted before; when the
        # cache is empty the hash is left to the conversion, which computes it anyway.
        digest = _indexed_hash(root, path) or file_sha256(path)
        folder = root / digest[:16]
        if (folder / "source.json").is_file():
            table = _read_verified(folder)
            if table is not None:
                _remember_hash(root, path, digest)
                table.info.update(cache="hit", cache_folder=str(folder))
                return table
    folder, digest = build_cache(path, root, replace=True)
    _remember_hash(root, path, digest)
    table = read_cache(folder)
    table.info.update(cache="built", cache_folder=str(folder))
    return table


def _index_path(root: Path, path: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode("utf-8", "surrogatepass")).hexdigest()
    return root / _INDEX_DIR / f"{key[:16]}.json"


def _file_state(path: Path) -> dict:
    """What changes when a file's bytes may have: size, modification time, and the inode
    change time, which `touch -r` or `cp -p` cannot set back."""
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns}


def _indexed_hash(root: Path, path: Path) -> str | None:
    """The recorded hash of `path`, when its size and times are unchanged."""
    entry_path = _index_path(root, path)
    try:
        entry = json.loads(entry_path.read_text())
        state = _file_state(path)
    except (OSError, ValueError):
        return None
    if all(entry.get(key) == value for key, value in state.items()):
        return entry.get("sha256")
    return None


def _remember_hash(root: Path, path: Path, digest: str) -> None:
    write_json_atomic(_index_path(root, path), {
        "path": str(path.resolve()), **_file_state(path), "sha256": digest})


def _read_verified(folder: Path):
    """The cache folder's table when its files match their records, else None."""
    verify_level()              # a wrong MRHP_VERIFY is the user's to fix, not a damage
    try:
        info = json.loads((folder / "source.json").read_text())
        records = info.get(FILES_KEY) or {}
        if (info.get("cache_format_version") != CACHE_FORMAT_VERSION
                or sorted(records) != sorted(_CACHE_FILES)):
            raise ValueError("written by another version")
        verify_files(folder, {"stage": "the vectors cache", FILES_KEY: records})
    except (OSError, ValueError, InputError) as exc:
        log.warning("the vectors cache %s is damaged or outdated (%s); converting the source "
                    "again", folder, str(exc).splitlines()[0])
        return None
    return read_cache(folder)


def read_cache(folder: str | os.PathLike):
    """Open a finished cache folder: a memory map and an Arrow word column, ~no parsing."""
    folder = Path(folder)
    info = json.loads((folder / "source.json").read_text())
    matrix = np.load(folder / "vectors.npy", mmap_mode="r", allow_pickle=False)
    words = read_table(folder / "words.arrow").column("word")
    return VectorTable(words, matrix, info)


def build_cache(path: Path, cache_root: Path, *, replace: bool = False) -> tuple[Path, str]:
    """Parse a text vectors file once into its cache folder (built beside it, renamed when
    done). Returns `(folder, sha256 of the source)`. With `replace`, a folder already there
    is swapped for the new one."""
    import pyarrow as pa

    started = time.perf_counter()
    cache_root.mkdir(parents=True, exist_ok=True)
    work = cache_root / f".build.{os.getpid()}.tmp"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    log.info("converting %s into the vectors cache %s (once)", path, cache_root)
    try:
        raw_path = work / "vectors.f32"
        with open(raw_path, "wb") as raw:
            words, stats, digest = parse_text_vectors(path, raw)
        count, dim = len(words), stats["dim"]
        matrix = np.lib.format.open_memmap(work / "vectors.npy", mode="w+", dtype=np.float32,
                                           shape=(count, dim))
        matrix[:] = np.memmap(raw_path, dtype=np.float32, mode="r", shape=(count, dim))
        matrix.flush()
        del matrix
        raw_path.unlink()
        table = pa.table({"word": pa.array(words, type=pa.string())})
        write_stream(work / "words.arrow", table.schema, table.to_batches())
        folder = cache_root / digest[:16]
        write_json_atomic(work / "source.json", {
            "format": stats["format"], "path": str(path.resolve()), "dim": dim, "count": count,
            "fingerprint": folder.name, "source_sha256": digest,
            FILES_KEY: file_records(work, _CACHE_FILES),
            "cache_format_version": CACHE_FORMAT_VERSION,
            "duplicates_skipped": stats["duplicates"], "blank_lines": stats["blank"],
            "seconds": round(time.perf_counter() - started, 2)})
        if replace and folder.exists():
            shutil.rmtree(folder)
        try:
            os.replace(work, folder)
        except OSError:
            if not (folder / "source.json").is_file():  # not another job's finished copy
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return folder, digest


# --------------------------------------------------------------------------------------------
# Parsing


def parse_text_vectors(path: Path, raw) -> tuple[list[str], dict, str]:
    """Read a GloVe/word2vec text file; write its vectors to the binary handle `raw` as
    float32 rows and return `(words, stats, sha256 of the file)`. A line with the wrong
    number of values, or a NaN or infinite value, stops the run with an `InputError` that
    names the line; so does a damaged or truncated `.gz`."""
    reader = _HashingReader(path)
    try:
        words, stats = _parse(path, reader, raw)
        digest = reader.finish()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"the compressed file is damaged or truncated ({exc})", file=str(path),
                         hint="download it again (or decompress it and pass the .txt)") from None
    finally:
        reader.release()
    return words, stats, digest


def _parse(path: Path, reader: _HashingReader, raw) -> tuple[list[str], dict]:
    binary = io.BufferedReader(reader, 1 << 20)
    if path.suffix == ".gz":
        binary = gzip.GzipFile(fileobj=binary, mode="rb")
    handle = io.TextIOWrapper(binary, encoding="utf-8", errors="replace", newline="\n")
    words: list[str] = []
    seen: set[str] = set()
    stats = {"duplicates": 0, "blank": 0}
    first = handle.readline()
    header = first.split()
    if len(header) == 2 and all(f.isdigit() for f in header):
        stats["format"], dim, line_no = "word2vec-text", int(header[1]), 1
        lines = handle
    else:
        # GloVe has no header: the size most of the first lines agree on (a token with
        # spaces inside would mislead a guess from one line).
        head = [first] + [line for _, line in zip(range(99), handle)]
        sizes = Counter(len(line.rstrip("\r\n ").split(" ")) - 1
                        for line in head if line.strip())
        stats["format"], line_no = "glove-text", 0
        dim = sizes.most_common(1)[0][0] if sizes else 0
        lines = _chain(head, handle)
    if dim <= 0:
        raise InputError("cannot tell the vector size from the first lines", file=str(path),
                         hint="each line is a word then its numbers, space-separated")
    stats["dim"] = dim
    pending: list[tuple[int, str]] = []
    for line in lines:
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
    kept_lines: list[tuple[int, str]] = []
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
        kept_lines.append((line_no, word))
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
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        line_no, word = kept_lines[row]
        raise InputError(f"line {line_no}: the vector of '{word[:50]}' holds NaN or infinite "
                         f"values ({int((~finite).sum())} such line(s) in lines "
                         f"{lines[0][0]}-{lines[-1][0]})", file=str(path),
                         hint="fix or delete that line: a NaN vector turns every score that "
                              "uses the word into NaN")
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
