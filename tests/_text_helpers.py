"""Helpers shared by the text tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def train_small_fasttext(corpus: Path, **options):
    """A skip-gram fastText model on a tiny corpus.

    On corpora this small the bindings sometimes leave rows of the matrices with garbage
    (non-finite or ~1e23 values, different rows from run to run) or stop with "Encountered
    NaN". The tests are about reading a model, not about training one, so a failed training
    is tried again and garbage rows are zeroed before the model is returned (and saved).
    """
    import fasttext

    settings = dict(model="skipgram", dim=16, epoch=2, lr=0.05, minCount=1, minn=2, maxn=4,
                    bucket=5000, thread=1, verbose=0)
    settings.update(options)
    for _ in range(20):
        try:
            model = fasttext.train_unsupervised(str(corpus), **settings)
        except RuntimeError:
            continue
        matrices = [model.get_input_matrix(), model.get_output_matrix()]
        sane = [np.where(np.isfinite(m) & (np.abs(m) < 100), m, 0).astype(np.float32)
                for m in matrices]
        model.set_matrices(*sane)
        return model
    raise RuntimeError("fastText training stopped on NaN 20 times")
