"""Checkpoints: plain state dicts, written atomically, read back with weights_only=True.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only (no pickled
objects), so `torch.load(path, weights_only=True)` reads it. Frozen embedding tables (static
vectors) are left out: they come back from the text store; so are the frozen layers of a
fine-tuned text encoder, which come back from its base model (whose name and weights hash the
checkpoint keeps and checks, see `models/text_encoder.py`).
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...atomic import atomic_path
from ...errors import InputError
from ...torch_files import why_unreadable

FORMAT_VERSION = 1


def frozen_embedding_keys(model: nn.Module) -> set[str]:
    """State-dict keys of static-vector tables that do not train. The embeddings inside a
    fine-tuned text encoder are not among them: `model.encoder_checkpoint` decides for those
    (`full` keeps them), see `frozen_encoder_keys`."""
    from ..models.text_encoder import text_encoders

    encoders = tuple(text_encoders(model))
    keys = set()
    for name, module in model.named_modules():
        if (isinstance(module, nn.Embedding) and not module.weight.requires_grad
                and not f"{name}.".startswith(encoders)):
            keys.add(f"{name}.weight" if name else "weight")
    return keys


def restored_elsewhere(model: nn.Module) -> set[str]:
    """State-dict keys that checkpoints leave out (frozen embeddings, frozen encoder layers)."""
    from ..models.text_encoder import frozen_encoder_keys

    return frozen_embedding_keys(model) | frozen_encoder_keys(model)


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict to checkpoint: tensors on the CPU (and modules' extra state as is).

    A module registered twice (a text encoder shared by two fields) has its tensors under
    both names; they are copied once, so the file holds them once."""
    skip = restored_elsewhere(model)
    copies: dict[tuple, torch.Tensor] = {}
    state = {}
    for key, value in model.state_dict().items():
        if key in skip:
            continue
        if isinstance(value, torch.Tensor):
            same = (value.device, value.data_ptr(), value.dtype, value.shape, value.stride())
            value = copies.setdefault(same, value.detach().cpu()) if value.numel() else value.cpu()
        state[key] = value
    return state


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    absent = set(missing) - restored_elsewhere(model)
    if absent or unexpected:
        raise ValueError(f"checkpoint does not fit the model: missing {sorted(absent)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")


def rng_state() -> dict:
    """The torch, CUDA, numpy and python random states of this process."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save(path: Path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save({"format_version": FORMAT_VERSION, **payload}, tmp)


def save_as(path: Path, written: Path) -> None:
    """Make `path` the same checkpoint as the finished file `written` (best.pt as this
    epoch's epoch-NNN.pt): a hard link, so the weights are neither serialised nor stored a
    second time; a copy where the file system has no hard links. Atomic either way: a reader
    sees the old file or the new one."""
    with atomic_path(path) as tmp:
        tmp.unlink()
        try:
            os.link(written, tmp)
        except OSError:
            shutil.copyfile(written, tmp)


def load(path: Path) -> dict:
    """A checkpoint written by `save`, on the CPU. Anything else (a damaged file, a pickled
    object, another format version) is an InputError naming the file."""
    hint = ("the file is damaged or was not written by mrhp-prep train; delete it (or pass "
            "--force to train from scratch), or choose another checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError or UnpicklingError here
        if isinstance(exc, (KeyboardInterrupt, MemoryError)):
            raise
        raise InputError(f"cannot read the checkpoint: {why_unreadable(exc, path)}",
                         file=str(path), hint=hint) from exc
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        found = payload.get("format_version") if isinstance(payload, dict) else None
        raise InputError(f"checkpoint format {found!r}, this version reads {FORMAT_VERSION}",
                         file=str(path), field="format_version", hint=hint)
    return payload


def load_checkpoint_for(model: torch.nn.Module, path, model_name: str) -> None:
    """Load a checkpoint's weights into `model`, refusing one of another model or shape."""
    load_checkpoint_state(model, load(path), path, model_name)


def load_checkpoint_state(model: torch.nn.Module, payload: dict, path, model_name: str) -> None:
    """Load the weights of a read checkpoint `payload` (from `path`) into `model`; a payload
    of another model or shape is an InputError naming the file."""
    try:
        load_model_state(model, payload["model"])
    except (KeyError, ValueError, RuntimeError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"the checkpoint does not fit the run's {model_name} model: {detail}",
                         file=str(path), field="model",
                         hint="use a checkpoint this run wrote (best, last or epoch-NNN), or "
                              "pass the run folder the checkpoint belongs to") from exc
