"""Loaded word vectors: the words and their matrix (what the vectors cache opens and the
readers of `.npy` matrices give), looked up many tokens at a time."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
