"""The `model` section of each model, in the order its config lists the keys. A setting several
models share is declared once below and named in each model's tuple; a default that differs
between them is in `by_model`. Defaults are the papers' where they give them
(docs/models.md, docs/fidelity.md).
"""

from __future__ import annotations

from .declaration import Setting
from .setting_types import (PROBABILITY, Choice, ChoiceOrInteger, ChoiceOrNumber, Flag,
                            Integer, Number, NumberOrNull, Text, WordList, above, at_least,
                            between)

WIDTH = at_least(1)        # widths, hidden sizes, head counts
LAYERS = at_least(0)       # layer counts: 0 leaves the stack out
ARCHITECTURES = ("paper", "released")                   # SANCL
IMAGE_ENCODERS = ("shared", "per-field")                # SANCL
REDUCTIONS = ("sum", "mean")                            # SANCL
SUBTASKS = ("ptrt", "pvrv", "ptrv", "pvrt", "rtrv")     # MM-SS's interactions, paper order
PSEUDO_LABEL_TIMINGS = ("next-epoch", "same-epoch")     # MM-SS


def name(model: str) -> Setting:
    return Setting("name", Text(), model, "the model (as --model)")


# ---------------------------------------------------------------- shared by several models

EMBEDDING_DROPOUT = Setting("embedding_dropout", Number(PROBABILITY), 0.5,
                            "dropout on the token vectors", by_model={"sancl": 0.2, "mmss": 0.1})
FREEZE_EMBEDDINGS = Setting("freeze_embeddings", Flag(), False,
                            "static word vectors stay fixed (and out of the checkpoints); "
                            "false: fine-tuned", by_model={"sancl": True})
IMAGE_LAYERS = Setting("image_layers", Integer(LAYERS), 3,
                       "transformer layers of MCR's RoI encoder")
IMAGE_HEADS = Setting("image_heads", Integer(WIDTH), 4, "attention heads of the RoI encoder")
IMAGE_FFN_DIM = Setting("image_ffn_dim", Integer(WIDTH), 512,
                        "feed-forward width of the RoI encoder")
IMAGE_DROPOUT = Setting("image_dropout", Number(PROBABILITY), 0.5,
                        "dropout after the RoI projection and on each residual branch")
IMAGE_ATTENTION_DROPOUT = Setting("image_attention_dropout", Number(PROBABILITY), 0.3,
                                  "dropout on the RoI encoder's attention weights")
HIDDEN_DIM = Setting("hidden_dim", Integer(WIDTH), 128,
                     "d: the width of the encoded text and RoIs and of every later layer "
                     "(MCL: the LSTM's hidden size)")
DROPOUT = Setting("dropout", Number(PROBABILITY), 0.1,
                  "dropout inside the interaction and fusion layers and before the scoring "
                  "heads")
RELEVANCE_THRESHOLD = Setting(
    "relevance_threshold", ChoiceOrNumber(("auto",)), "auto",
    "helpful rows (label above it) are the contrastive positives; auto: the dataset's "
    "threshold (1 Amazon, 0 Lazada)")
MCL_RELEVANCE_THRESHOLD = Setting(
    "relevance_threshold", ChoiceOrNumber(("auto",), null=True), "auto",
    "helpful rows (label above it) are the contrastive rows; auto: the dataset's threshold "
    "(1 Amazon, 0 Lazada); null: every row")

# read by text_encoder.py (an ids store's transformer), not by the models themselves
ENCODER = (
    Setting("text_encoder", Choice(("auto", "frozen-features", "finetune")), "auto",
            "auto: finetune for an ids store (the transformer trains inside the model), "
            "frozen-features (the stored features) otherwise"),
    Setting("finetune_layers", ChoiceOrInteger(("all",), LAYERS), "all",
            "all, or N: the last N transformer layers (and above) train, the rest stay "
            "frozen; 0 runs the encoder frozen"),
    Setting("shared_encoder", Flag(), False, "one encoder for product and review text",
            by_model={"mmss": True}),
    Setting("gradient_checkpointing", Flag(), False,
            "recompute the encoder's activations in backward: less memory, more time"),
    Setting("encoder_checkpoint", Choice(("trained", "full")), "trained",
            "trained: checkpoints leave the encoder's frozen layers out; full: keep them"),
)
ENCODER_KEYS = tuple(setting.key for setting in ENCODER)

# ---------------------------------------------------------------- SANCL (Han et al., 2022)

SANCL = (
    name("sancl"),
    Setting("architecture", Choice(ARCHITECTURES), "paper",
            "paper: eq. 10 and 15 as written; released: plus the released model's "
            "contrastive predictors and MLP scorer"),
    Setting("text_hidden", Integer(WIDTH), 128, "GRU hidden size (the tables' LSTM hidden dim)"),
    Setting("image_hidden", Integer(WIDTH), 128, "image embedding width"),
    Setting("image_encoders", Choice(IMAGE_ENCODERS), "shared",
            "MCR's RoI encoder: shared = one for both fields (as released); per-field = one "
            "each"),
    IMAGE_LAYERS, IMAGE_HEADS, IMAGE_FFN_DIM, IMAGE_DROPOUT, IMAGE_ATTENTION_DROPOUT,
    Setting("image_relu_dropout", Number(PROBABILITY), 0.3,
            "dropout on the RoI encoder's feed-forward hidden units"),
    Setting("shared_hidden", Integer(WIDTH), 64, "width of the two shared spaces"),
    EMBEDDING_DROPOUT, FREEZE_EMBEDDINGS,
    Setting("kappa", Number(at_least(0)), 0.1,
            "weight of the contrastive (auxiliary) loss; 0 = none"),
    Setting("temperature", Number(above(0)), 1.0, "tau of the contrastive score"),
    Setting("probe_beta", ChoiceOrNumber(("learned",), between(0, 1)), "learned",
            "beta of M' = M + beta (1 - M): learned per review, or a fixed number"),
    RELEVANCE_THRESHOLD,
    *ENCODER,
    Setting("contrastive_reduction", Choice(REDUCTIONS), "sum",
            "sum: eq. 11-12 (-log share summed over the positives); mean: averaged over them"),
)

# ---------------------------------------------------------------- MCL (Nguyen et al., 2022)

MCL = (
    name("mcl"),
    HIDDEN_DIM, FREEZE_EMBEDDINGS, EMBEDDING_DROPOUT,
    IMAGE_LAYERS, IMAGE_HEADS, IMAGE_FFN_DIM, IMAGE_DROPOUT, IMAGE_ATTENTION_DROPOUT,
    Setting("cross_modal_interaction", Flag(), True,
            "the multimodal interaction module (eq. 5-14); false: the ablation without it"),
    Setting("interaction_layers", Integer(LAYERS), 5, "D: cross-modal blocks per modality"),
    Setting("interaction_heads", Integer(WIDTH), 1,
            "heads of the cross-modal attention (eq. 8 is a single head)"),
    Setting("fusion_layers", Integer(LAYERS), 1,
            "transformer layers of each SelfAttn of the fusion paths"),
    Setting("fusion_heads", Integer(WIDTH), 4, "heads of the fusion SelfAttn"),
    Setting("fusion_ffn_dim", Integer(WIDTH), 512, "feed-forward width of the fusion SelfAttn"),
    Setting("fusion_cnn_kernel", Integer(WIDTH), 3,
            "kernel of the intra-modal path's 1-D convolution"),
    DROPOUT,
    Setting("contrastive", Flag(), True,
            "the contrastive objective (eq. 35); false: the ablation without it"),
    Setting("adaptive_weighting", Flag(), True, "eq. 33; false: plain eq. 32"),
    Setting("positive_optimum", Number(), 2.0, "o_p of eq. 33"),
    Setting("negative_optimum", Number(), 0.0, "o_n of eq. 33"),
    Setting("contrastive_weight", Number(at_least(0)), 1.0,
            "L = L_contrastive x weight + L_ranking"),
    MCL_RELEVANCE_THRESHOLD,
    *ENCODER,
)

# ---------------------------------------------------------------- MM-SS (Gong, Jia, Jing)

MMSS = (
    name("mmss"),
    HIDDEN_DIM,
    Setting("task_dim", Integer(WIDTH), 128, "d_g = d_s: width of f_g* and f_s*"),
    Setting("subtask_mlp_hidden", Integer(WIDTH), 64, "hidden width of each subtask MLP (eq. 9)"),
    FREEZE_EMBEDDINGS, EMBEDDING_DROPOUT,
    IMAGE_LAYERS, IMAGE_HEADS, IMAGE_FFN_DIM, IMAGE_DROPOUT, IMAGE_ATTENTION_DROPOUT,
    Setting("interaction_layers", Integer(LAYERS), 1,
            "transformer layers of each SelfAttn([X; Y]) (eq. 3-5)"),
    Setting("interaction_heads", Integer(WIDTH), 4, "heads of each SelfAttn([X; Y])"),
    Setting("interaction_ffn_dim", Integer(WIDTH), 512, "feed-forward width of SelfAttn([X; Y])"),
    DROPOUT,
    Setting("interaction_modeling", Flag(), True,
            "false: the ablation without module (b) (needs subtasks: [])"),
    Setting("subtasks", WordList(SUBTASKS), list(SUBTASKS),
            "the subtask heads trained on pseudo labels; []: without module (d)"),
    Setting("num_train_reviews", NumberOrNull(integer=True, range=at_least(1)), None,
            "size of the pseudo-label state; null: grows with the data"),
    Setting("correlation_ratio", Number(), 1.0, "alpha_1 of eq. 19"),
    Setting("correlation_difference", Number(), 1.0, "alpha_2 of eq. 20"),
    Setting("distance_scale", NumberOrNull(range=above(0)), None,
            "s_k of eq. 18; null: the representation's width"),
    Setting("covariance_shrinkage", Number(between(0, 1)), 0.1,
            "rho: Sigma shrunk toward a scaled identity"),
    Setting("epsilon", Number(above(0)), 1.0e-6, "epsilon of eq. 19 and 21"),
    Setting("pseudo_label_timing", Choice(PSEUDO_LABEL_TIMINGS), "next-epoch",
            "next-epoch: a label updated in epoch i is first a target in epoch i + 1 "
            "(Self-MM); same-epoch: the update's own batch already trains on it"),
    *ENCODER,
)

MODEL_SECTIONS = {"sancl": SANCL, "mcl": MCL, "mmss": MMSS}
