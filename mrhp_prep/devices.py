"""Where a model runs and in which precision: the `--device` and `--precision` values."""

from __future__ import annotations

from .choices import require_choice
from .errors import InputError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def resolve_device(name: str):
    """The torch.device a --device value names ("auto": CUDA when available, else CPU).

    Raises InputError for a name torch does not know or a CUDA device this machine lacks.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"unknown device {name!r}", field="--device",
                         hint="use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name} was asked for but no CUDA device is available",
                         field="--device", hint="use --device cpu (or auto)")
    return device


def resolve_precision(precision: str, device) -> str:
    """"auto" becomes fp16 on a CUDA device and fp32 elsewhere; other values stay."""
    require_choice(precision, PRECISIONS, what="precision", option="--precision")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return precision
