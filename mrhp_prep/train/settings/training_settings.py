"""The `data`, `sampling`, `loss` and `train` sections: the same keys for every model, in the
order a run's config.yaml lists them. A default that differs between models is in `by_model`.
"""

from __future__ import annotations

from ..report.metrics import METRICS
from .declaration import Setting
from .setting_types import (AutoOrFlag, Choice, ChoiceOrNumber, Flag, Integer, Number,
                            NumberOrNull, Range, at_least)

POSITIVE = at_least(1)
NOT_NEGATIVE = at_least(0)

DATA = (
    Setting("max_rois_per_image", Integer(POSITIVE), 32,
            "RoIs kept per image (the store's first, as stored)"),
    Setting("min_image_rows", Integer(POSITIVE), 16,
            "image tensors are padded to at least this many rows"),
    Setting("max_image_rows", Integer(POSITIVE), 128,
            "an item's concatenated RoIs are cut at this many rows"),
    Setting("max_text_tokens", Integer(POSITIVE), 128, "tokens kept per text"),
    Setting("allow_partial", Flag(), False,
            "train on stores that cover only part of the manifest (--allow-partial)"),
    Setting("dev_set", Choice(("full", "sampled")), "full",
            "dev rows that choose the best epoch: full = every dev review; sampled = the "
            "released SANCL dev pairs (3 positives per label level, 5 negatives each)"),
)

SAMPLING = (
    Setting("scheme", Choice(("groups", "pairs")), "groups",
            "groups: MCR's 1 positive + K negatives of its product; pairs: the papers' plain "
            "pairs (1 negative, label gap 1, unweighted)"),
    Setting("negatives", Integer(POSITIVE), 7, "groups: K negatives per positive"),
    Setting("min_label_gap", Integer(POSITIVE), 2,
            "groups: a negative's label is at most the positive's minus this"),
    Setting("weighted", Flag(), True,
            "groups: negatives weighted by 1 - (share of their label)"),
    Setting("resample", Flag(), True,
            "draw new groups each epoch; false: epoch 0's groups every epoch (the released "
            "SANCL configs)"),
)

LOSS = (
    Setting("margin", ChoiceOrNumber(("auto", "label-gap")), 1.0,
            "margin of the pairwise hinge loss: a number, label-gap (the two labels' "
            "difference, MCR's code) or auto (label-gap for groups, 1.0 for pairs)",
            by_model={"sancl": "auto"}),
)

TRAIN = (
    Setting("epochs", Integer(POSITIVE), 30, "training epochs at most"),
    Setting("batch_size", Integer(POSITIVE), 32,
            "rows per step and process (4 groups x 8, or 16 pairs)"),
    Setting("lr", Number(NOT_NEGATIVE), 1.0e-4, "Adam's learning rate (0 keeps the weights)"),
    Setting("encoder_lr", NumberOrNull(range=NOT_NEGATIVE), None,
            "learning rate of a text encoder fine-tuned inside the model (ids stores); "
            "null: lr", by_model={"mmss": 5.0e-5}),
    Setting("weight_decay", Number(NOT_NEGATIVE), 0.0, "Adam's weight decay"),
    Setting("grad_clip", Number(NOT_NEGATIVE), 5.0, "max gradient norm; 0 = no clipping"),
    Setting("plateau_factor", Number(Range(0, False, 1, False)), 0.5,
            "ReduceLROnPlateau's factor on the monitored dev metric"),
    Setting("plateau_patience", Integer(NOT_NEGATIVE), 4, "ReduceLROnPlateau's patience"),
    Setting("early_stopping_patience", Integer(NOT_NEGATIVE), 8,
            "epochs without a better dev metric before stopping; 0 = never"),
    Setting("monitor", Choice(METRICS), "map",
            "dev metric for early stopping, the plateau and the best checkpoint"),
    Setting("seed", Integer(), 2022, "seed of the weights, the sampling and dropout"),
    Setting("eval_batch_size", Integer(POSITIVE), 128, "rows per scoring batch"),
    Setting("checkpoint_every_steps", Integer(NOT_NEGATIVE), 0,
            "also checkpoint every N steps (long epochs); 0 = at epoch ends only"),
    Setting("epoch_checkpoints", Flag(), True,
            "keep epoch-NNN.pt too (a fully fine-tuned BERT: ~440 MB each)"),
    Setting("amp", AutoOrFlag(), "auto", "mixed precision: auto = on for CUDA devices"),
)

RUN_SECTIONS = {"data": DATA, "sampling": SAMPLING, "loss": LOSS, "train": TRAIN}
