"""Vocabularies: token strings to ids, fitted on the train split, saved as plain text.

File format (`vocab-product.txt`, `vocab-review.txt`): UTF-8, one token per line, separated
by "\\n" only (read it with `text.split("\\n")`, not `splitlines()`, which also breaks at
characters such as U+2028 that a token may hold); the line number (from 0) is the id.
Id 0 is `<pad>`, id 1 is `<unk>`; then the kept tokens by falling frequency, ties in code
point order, so the same counts always give the same file.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

from ..atomic import atomic_path

PAD, UNK = "<pad>", "<unk>"
SPECIALS = (PAD, UNK)
PAD_ID, UNK_ID = 0, 1


class Vocabulary:
    """An ordered list of tokens; `ids(tokens) -> list[int]` maps unknown tokens to 1."""

    def __init__(self, tokens: Iterable[str]):
        self.tokens = list(tokens)
        if tuple(self.tokens[:2]) != SPECIALS:
            raise ValueError(f"a vocabulary starts with {SPECIALS}, not {self.tokens[:2]}")
        self.index = {token: i for i, token in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("a vocabulary lists each token once")
        self._arrow_tokens = None

    @classmethod
    def fit(cls, counts: Counter, min_freq: int = 5) -> "Vocabulary":
        """Keep tokens seen at least `min_freq` times; the specials come first."""
        kept = sorted((t for t, n in counts.items() if n >= min_freq and t not in SPECIALS),
                      key=lambda t: (-counts[t], t))
        return cls([*SPECIALS, *kept])

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def ids(self, tokens: Iterable[str]) -> list[int]:
        get = self.index.get
        return [get(t, UNK_ID) for t in tokens]

    def ids_array(self, tokens: list[str]) -> np.ndarray:
        """`ids(tokens)` as int32, looked up in Arrow's hash table rather than token by
        token in Python (several times faster on the tens of thousands of a text chunk)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self._arrow_tokens is None:
            self._arrow_tokens = pa.array(self.tokens, pa.string())
        found = pc.index_in(pa.array(tokens, pa.string()), value_set=self._arrow_tokens)
        return found.fill_null(UNK_ID).to_numpy(zero_copy_only=False).astype(np.int32)

    def save(self, path: str | Path) -> None:
        """Write one token per line, atomically."""
        for token in self.tokens:
            if "\n" in token or "\r" in token:
                raise ValueError(f"token {token!r} holds a line break and cannot be saved")
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join(self.tokens) + "\n", encoding="utf-8", newline="")

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        text = Path(path).read_text(encoding="utf-8")
        return cls(text[:-1].split("\n") if text.endswith("\n") else text.split("\n"))
