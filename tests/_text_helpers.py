"""Helpers shared by the text tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def train_small_fasttext(corpus: Path, **options):
    """A skip-gram fastText model on a tiny corpus.

    On corpora this small the bindings' training sometimes diverges (an error "Encountered
    NaN", or huge values); the tests are about reading a model, so they train again.
    """
    import fasttext

    settings = dict(model="skipgram", dim=16, epoch=2, minCount=1, minn=2, maxn=4,
                    bucket=5000, thread=1, verbose=0)
    settings.update(options)
    for _ in range(20):
        try:
            model = fasttext.train_unsupervised(str(corpus), **settings)
        except RuntimeError:
            continue
        matrix = model.get_input_matrix()
        if np.isfinite(matrix).all() and np.abs(matrix).max() < 100:
            return model
    raise RuntimeError("fastText training diverged 20 times")
