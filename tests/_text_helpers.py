"""Helpers shared by the text tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def train_small_fasttext(corpus: Path, **options):
    """A skip-gram fastText model on a tiny corpus.

    On corpora this small the bindings' training often diverges (an error "Encountered NaN",
    or huge values), and not the same way twice even with one thread; a high learning rate
    makes it rarer. The tests are about reading a model, so they train again until it is sane.
    """
    import fasttext

    settings = dict(model="skipgram", dim=16, epoch=2, lr=0.2, minCount=1, minn=2, maxn=4,
                    bucket=5000, thread=1, verbose=0)
    settings.update(options)
    for _ in range(40):
        try:
            model = fasttext.train_unsupervised(str(corpus), **settings)
        except RuntimeError:
            continue
        matrix = model.get_input_matrix()
        if np.isfinite(matrix).all() and np.abs(matrix).max() < 100:
            return model
    raise RuntimeError("fastText training diverged 40 times")
