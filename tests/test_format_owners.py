"""One module owns each on-disk format: no other module of the package opens its files.

Read from the source (AST): the calls that open a store's files (h5py, Arrow IPC, Parquet,
.npy, memory maps) and the string literals that spell a store's file names may appear only
in the modules that own them. A second reader of a format would fail here, naming the
module, the line and what it used.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mrhp_prep"

# What opens files of a format -> the modules allowed to use it.
CALLS = {
    # the RoI store: read in store.py, written in store_write.py
    "h5py.File": {"vision/store.py", "vision/store_write.py"},
    "pa.ipc": {"arrow_files.py"},
    "pa.memory_map": {"arrow_files.py"},
    "pa.OSFile": {"arrow_files.py"},
    # the manifest tables; a vectors source's word list; a predictions file given to evaluate
    "pd.read_parquet": {"data/manifest.py", "train/report/predictions.py"},
    "pq.read_table": {"data/manifest.py", "text/vectors.py"},
    "pq.write_table": {"data/manifest.py"},
    "to_parquet": {"data/manifest.py"},
    # vectors-*.npy; vector sources and their cache; npz imports
    "np.load": {"text/store.py", "text/vectors.py", "text/vector_cache.py",
                "vision/interop.py"},
    "np.memmap": {"vision/store.py", "text/vector_cache.py"},
}

# File names (a literal, or an f-string with its fields as {}) -> their owners.
NAMES = [
    (r"(rois|part-[\w{}:*\[\]-]*)\.h5|\*?\.h5", {"vision/store.py", "vision/parts.py"}),
    (r"(product|review|\{field\}|\{\})-[\w{}:*\[\]-]*\.arrow|\*\.arrow",
     {"text/shards.py"}),
    (r"probe-[\w{}:*\[\]-]*\.arrow", {"probe/shards.py"}),
    (r"words\.arrow|vectors\.npy", {"text/vector_cache.py"}),
    (r"vocab-[\w{}*-]*(\.txt)?|vectors-[\w{}*-]*(\.npy)?", {"text/store.py"}),
    (r"(products|reviews|images|\{\})\.parquet", {"data/manifest.py"}),
    (r"MANIFEST\.json|failures\.jsonl|\.stage\.json", {"cache.py"}),
    (r"\.verified\.json", {"verify.py"}),
    (r"input-files\.json", {"train/data/input_files.py"}),
    # a training run folder's own files
    (r"config\.yaml|metrics\.json|model\.txt|curves\.png|scores\.png|checkpoints",
     {"train/run_folder.py"}),
    (r"predictions-[\w{}:*\[\]-]*\.jsonl|predict-[\w{}:*\[\]-]*\.jsonl", {"train/run_folder.py"}),
]


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    return None


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and _text(body[0].value) is not None:
                ids.add(id(body[0].value))
    return ids


def _uses(tree: ast.AST):
    """(line, what) for every format call and file name in a module."""
    docs = _docstrings(tree)
    nested = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
              for v in node.values}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            for call in CALLS:
                if dotted == call or dotted.startswith(call + ".") or (
                        "." not in call and node.attr == call):
                    yield node.lineno, call
        text = _text(node)
        if text is not None and id(node) not in docs and id(node) not in nested:
            for pattern, _ in NAMES:
                if re.fullmatch(pattern, text.split("/")[-1]):
                    yield node.lineno, pattern


def _violations() -> list[str]:
    owners = {**CALLS, **dict(NAMES)}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        for line, what in _uses(ast.parse(path.read_text(encoding="utf-8"))):
            if module not in owners[what]:
                found.append(f"{module}:{line} uses {what!r} (owned by "
                             f"{', '.join(sorted(owners[what]))})")
    return sorted(set(found))


def test_only_the_owner_of_a_format_opens_its_files():
    assert _violations() == []


def test_the_check_sees_a_second_reader(tmp_path, monkeypatch):
    # The check itself: a module that opened rois.h5 or read a text shard would be named.
    fake = tmp_path / "mrhp_prep"
    (fake / "train").mkdir(parents=True)
    (fake / "train" / "reader.py").write_text(
        "import h5py\nimport pyarrow as pa\n\n"
        "def read(folder, field):\n"
        "    with h5py.File(folder / 'rois.h5') as f:\n"
        "        pass\n"
        "    return pa.ipc.open_stream(pa.memory_map(str(folder / f'{field}-00000.arrow')))\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    found = _violations()
    assert any("train/reader.py:5 uses 'h5py.File'" in f for f in found)
    assert any("train/reader.py:7 uses 'pa.ipc'" in f for f in found)
    assert any("train/reader.py:7 uses 'pa.memory_map'" in f for f in found)
    assert any(".arrow" in f and "text/shards.py" in f for f in found)
    assert any(".h5" in f and "vision/store.py" in f for f in found)
