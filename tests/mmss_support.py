"""MM-SS models shared by test_models_mmss.py and test_models_ssp_label.py."""

from __future__ import annotations

import numpy as np
import torch

from mrhp_prep.train.models.mmss import SUBTASKS, MmssModel
from synthetic_batches import NO_DROPOUT, inputs_for, small_options

ROWS = 12  # rows of a synthetic batch (make_batch)


def options(**overrides) -> dict:
    return {**small_options(), **NO_DROPOUT, "task_dim": 8, "subtask_mlp_hidden": 8,
            "num_train_reviews": 20, **overrides}


def build(text: str = "ids", images: bool = True, **overrides) -> MmssModel:
    torch.manual_seed(0)
    return MmssModel(options(**overrides), inputs_for(text, images))


def interaction_inputs_present(batch) -> np.ndarray:
    """[B, 5] bool: the row has a real position on either side of each interaction."""
    pt, rt = batch["product_text_mask"].any(1), batch["review_text_mask"].any(1)
    pv, rv = batch["product_image_mask"].any(1), batch["review_image_mask"].any(1)
    sides = {"ptrt": (pt, rt), "pvrv": (pv, rv), "ptrv": (pt, rv), "pvrt": (pv, rt),
             "rtrv": (rt, rv)}
    return np.stack([(a | b).numpy() for a, b in (sides[s] for s in SUBTASKS)], axis=1)
