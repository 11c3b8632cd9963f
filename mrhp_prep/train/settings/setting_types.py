"""Settings take the type of the default they override, and stay inside their valid range.

A value from `--set`, a `--config` file or a preset is read as YAML, and YAML 1.1 reads
`5e-5` as a string and `"false"` stays a string. Here each value is converted to the type of
the model default it replaces (bool, int, float), and numbers are checked against the range
the trainer can use, so `train.lr=-1` or `model.kappa=abc` is an error naming the key instead
of a crash, or a silent wrong run, later on.
"""

from __future__ import annotations

import math
from typing import Any

from ...errors import InputError

TRUE_WORDS = {"true", "yes", "on", "1", "y"}
FALSE_WORDS = {"false", "no", "off", "0", "n"}

# key -> (lowest, lowest allowed?, highest, highest allowed?); None = no bound
RANGES: dict[str, tuple] = {
    "train.lr": (0, True, None, False),     # 0 keeps the weights (a baseline run)
    "train.weight_decay": (0, True, None, False),
    "train.grad_clip": (0, True, None, False),
    "train.plateau_factor": (0, False, 1, False),
    "train.plateau_patience": (0, True, None, False),
    "train.early_stopping_patience": (0, True, None, False),
    "train.checkpoint_every_steps": (0, True, None, False),
    "train.epochs": (1, True, None, False),
    "train.batch_size": (1, True, None, False),
    "train.eval_batch_size": (1, True, None, False),
    "train.encoder_lr": (0, True, None, False),
    "data.max_rois_per_image": (1, True, None, False),
    "data.min_image_rows": (1, True, None, False),
    "data.max_image_rows": (1, True, None, False),
    "data.max_text_tokens": (1, True, None, False),
    "sampling.negatives": (1, True, None, False),
    "sampling.min_label_gap": (0, True, None, False),
    "model.kappa": (0, True, None, False),
    "model.temperature": (0, False, None, False),
    "model.contrastive_weight": (0, True, None, False),
    "model.epsilon": (0, False, None, False),
    "model.probe_beta": (0, True, 1, True),
    "model.num_train_reviews": (1, True, None, False),
    "model.distance_scale": (0, False, None, False),
}
# settings that take one of a few words (case does not matter)
WORDS: dict[str, tuple[str, ...]] = {
    "model.architecture": ("paper", "released"),
    "model.image_encoders": ("shared", "per-field"),
    "model.contrastive_reduction": ("sum", "mean"),
    "model.pseudo_label_timing": ("next-epoch", "same-epoch"),
    "data.dev_set": ("full", "sampled"),
}
# settings that take one of a few words or a number (a number given as text becomes a float)
WORD_OR_NUMBER: dict[str, tuple[str, ...]] = {
    "model.probe_beta": ("learned",),
    "model.relevance_threshold": ("auto",),
    "loss.margin": ("auto", "label-gap"),
}
# settings that take one of a few words or a whole number (a preset's 4 does not make the
# word an error, and "3" from a pipeline YAML becomes 3)
WORD_OR_INTEGER: dict[str, tuple[str, ...]] = {"model.finetune_layers": ("all",)}
# settings that are null (derived from the data) or a number of this type
NUMBER_OR_NULL: dict[str, type] = {"model.num_train_reviews": int, "model.distance_scale": float,
                                  "train.encoder_lr": float}
# every key with one of these endings: width, layer and head counts, dropout probabilities
SUFFIX_RANGES: dict[str, tuple] = {
    "dropout": (0, True, 1, False),
    "_heads": (1, True, None, False),
    "_dim": (1, True, None, False),
    "hidden": (1, True, None, False),
    "_layers": (0, True, None, False),
}


_KIND_NAMES = {str: "word", int: "whole number", float: "number", bool: "true/false value"}


def _fail(dotted: str, value: Any, expected: str, where: str) -> InputError:
    return InputError(f"'{dotted}' must be {expected}, not {value!r}", row=where, field=dotted,
                      hint=f"e.g. --set {dotted}=<{expected}>")


def convert_setting(dotted: str, value: Any, default: Any, where: str) -> Any:
    """`value` as the type of `default` (bool, int, float), or as the WORDS, WORD_OR_INTEGER,
    WORD_OR_NUMBER and NUMBER_OR_NULL tables say for their keys; values of other defaults
    are kept as they are.

    Raises an InputError naming `dotted`, the expected type and `where` the value came from.
    """
    if dotted in WORDS:
        word = str(value).strip().lower()
        if isinstance(value, bool) or word not in WORDS[dotted]:
            raise _fail(dotted, value, " or ".join(WORDS[dotted]), where)
        return word
    if dotted in NUMBER_OR_NULL:
        if value is None or str(value).strip().lower() in {"null", "none", "~"}:
            return None
        return _as_type_of(dotted, value, NUMBER_OR_NULL[dotted](1), where)
    if dotted in WORD_OR_INTEGER:
        words = WORD_OR_INTEGER[dotted]
        if isinstance(value, str) and value.strip().lower() in words:
            return value.strip().lower()
        expected = " or ".join(words) + " or a whole number"
        try:
            return _as_type_of(dotted, value, 0, where)
        except InputError:
            raise _fail(dotted, value, expected, where) from None
    if dotted in WORD_OR_NUMBER:
        words = WORD_OR_NUMBER[dotted]
        if isinstance(value, str) and value.strip().lower() in words:
            return value.strip().lower()
        expected = " or ".join(words) + " or a finite number"
        if isinstance(value, bool):
            raise _fail(dotted, value, expected, where)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise _fail(dotted, value, expected, where) from None
        if not math.isfinite(number):
            raise _fail(dotted, value, expected, where)
        return number
    return _as_type_of(dotted, value, default, where)


def _as_type_of(dotted: str, value: Any, default: Any, where: str) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise _fail(dotted, value, "true or false", where)
    if isinstance(default, int):
        if isinstance(value, bool):
            raise _fail(dotted, value, "an integer", where)
        try:
            number = float(value) if not isinstance(value, int) else value
        except (TypeError, ValueError):
            raise _fail(dotted, value, "an integer", where) from None
        if isinstance(number, float) and not (math.isfinite(number) and number.is_integer()):
            raise _fail(dotted, value, "an integer", where)
        return int(number)
    if isinstance(default, float):
        if isinstance(value, bool):
            raise _fail(dotted, value, "a number", where)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise _fail(dotted, value, "a number", where) from None
        if not math.isfinite(number):
            raise _fail(dotted, value, "a finite number", where)
        return number
    if isinstance(default, list):
        if not isinstance(value, list):
            raise _fail(dotted, value, "a list such as [a, b]", where)
        # A list inside the list (or a mapping, or null) is no value of the setting.
        kinds = {type(item) for item in default}
        for item in value:
            single = item is not None and not isinstance(item, (list, dict))
            if not single or (kinds and type(item) not in kinds):
                names = " or ".join(sorted(_KIND_NAMES.get(k, k.__name__) for k in kinds))
                raise _fail(dotted, value, f"a list of {names or 'single value'}s such as "
                                           "[a, b]", where)
    return value


def check_range(dotted: str, value: Any, where: str) -> None:
    """Refuse a number outside the range the trainer can use (e.g. a negative learning rate)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    key = dotted.rsplit(".", 1)[-1]
    bounds = RANGES.get(dotted) or next(
        (b for suffix, b in SUFFIX_RANGES.items() if key.endswith(suffix)), None)
    if bounds is None:
        return
    low, low_ok, high, high_ok = bounds
    too_low = low is not None and (value < low or (value == low and not low_ok))
    too_high = high is not None and (value > high or (value == high and not high_ok))
    if too_low or too_high:
        left = "" if low is None else f"{'>=' if low_ok else '>'} {low}"
        right = "" if high is None else f"{'<=' if high_ok else '<'} {high}"
        allowed = " and ".join(part for part in (left, right) if part)
        raise InputError(f"'{dotted}' = {value} is out of range: it must be {allowed}",
                         row=where, field=dotted, hint=f"choose a value {allowed}")
