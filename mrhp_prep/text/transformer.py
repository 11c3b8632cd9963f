"""Frozen transformer features per token, with length-sorted batching.

`TransformerEncoder(model).encode(ids_list)` runs the model on token id sequences (as
`TransformerTokenizer` makes them) and returns, per sequence, the hidden states of its tokens
as float16 [num_tokens, hidden_size]: the last layer, or the mean of chosen layers.

Sequences are batched in order of length, so each batch pads only to its own longest member
(a batch of 10-token reviews does not pay for a 128-token one). On a GPU the model runs under
autocast (fp16 by default, bf16 on request); on a CPU in float32.
"""

from __future__ import annotations

import logging
from typing import Iterator, Sequence

import numpy as np

from ..errors import InputError
from ..devices import resolve_device, resolve_precision

log = logging.getLogger(__name__)


def _load_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, ValueError, RuntimeError, EOFError]
    try:
        from safetensors import SafetensorError
        errors.append(SafetensorError)
    except ImportError:
        pass
    return tuple(errors)


# What loading a damaged or foreign model folder raises (a truncated safetensors file raises
# SafetensorError, which is no OSError).
MODEL_LOAD_ERRORS = _load_errors()


def tokenizer_problem(model: str, tokenizer_size: int) -> str | None:
    """Why the tokenizer cannot be the model's, or None.

    A folder without its tokenizer files still loads a tokenizer in recent `transformers`,
    with only the special tokens: every word would become [UNK]. Its size, far below the
    model's embedding rows (`vocab_size` in config.json), gives it away.
    """
    from transformers import AutoConfig

    try:
        vocab_size = int(getattr(AutoConfig.from_pretrained(model), "vocab_size", 0) or 0)
    except (OSError, ValueError, TypeError):
        return None
    if vocab_size and tokenizer_size < vocab_size // 2:
        return (f"the tokenizer has {tokenizer_size} entries but the model embeds "
                f"{vocab_size}: the folder lacks its tokenizer files, and every word would "
                "become the unknown token")
    return None


def parse_layers(spec: str) -> list[int]:
    """"-1" -> [-1]; "-4,-3,-2,-1" -> four layers. 0 is the embedding output."""
    try:
        layers = [int(part) for part in str(spec).split(",") if part.strip()]
    except ValueError as exc:
        raise ValueError(f"layers must be comma-separated integers, not {spec!r}") from exc
    if not layers:
        raise ValueError("name at least one layer")
    return layers


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices in batches of `batch_size`, longest first (the first batch shows the peak
    memory at once), ties in input order."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def check_finite_features(features: list[np.ndarray], ids: list[str], encoder) -> None:
    """NaN or inf features would reach training as NaN losses: stop at the first."""
    for item_id, array in zip(ids, features):
        if not np.isfinite(array).all():
            raise InputError(f"the model gave NaN or infinite features for '{item_id[:80]}'",
                             field="--model", hint="try --precision fp32 (fp16 can overflow); "
                             f"if that fails, the weights of {encoder.model_name} are damaged")


class TransformerEncoder:
    """A frozen `transformers` encoder; `model` is a local folder or a hub name."""

    def __init__(self, model: str, *, layers: Sequence[int] = (-1,), device: str = "auto",
                 precision: str = "auto", pad_id: int = 0):
        import torch
        from transformers import AutoModel

        self.model_name = str(model)
        torch_device = resolve_device(device)
        self.device = str(torch_device)
        self.precision = resolve_precision(precision, torch_device)
        self.model = AutoModel.from_pretrained(self.model_name).eval().to(self.device)
        for name, tensor in self.model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"the weight {name} holds NaN or infinite values")
        self.layers = list(layers)
        num_states = int(self.model.config.num_hidden_layers) + 1
        for layer in self.layers:
            if not -num_states <= layer < num_states:
                raise ValueError(f"layer {layer} is outside the model's {num_states} hidden "
                                 f"states (0 = embeddings, -1 = last)")
        self.pad_id = pad_id
        self.hidden_size = int(self.model.config.hidden_size)
        self._autocast_dtype = {"fp16": torch.float16,
                                "bf16": torch.bfloat16}.get(self.precision)

    def describe(self) -> dict:
        return {"model": self.model_name, "layers": self.layers, "device": self.device,
                "precision": self.precision, "hidden_size": self.hidden_size,
                "architecture": type(self.model).__name__}

    def encode_batch(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Features of a batch of id sequences: each [len(seq), hidden_size] float16."""
        import torch

        longest = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), longest), dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, :len(seq)] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, :len(seq)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        with torch.inference_mode(), torch.autocast(device_type=device_type,
                                                    dtype=self._autocast_dtype or torch.float32,
                                                    enabled=self._autocast_dtype is not None):
            outputs = self.model(input_ids=ids, attention_mask=mask,
                                 output_hidden_states=len(self.layers) > 1 or self.layers != [-1])
            if self.layers == [-1]:
                states = outputs.last_hidden_state.float()
            else:
                states = torch.stack([outputs.hidden_states[k].float() for k in self.layers]
                                     ).mean(dim=0)
        states = states.half().cpu().numpy()
        return [states[row, :len(seq)] for row, seq in enumerate(sequences)]

    def encode(self, sequences: Sequence[Sequence[int]], batch_size: int = 32,
               sort_by_length: bool = True) -> Iterator[tuple[list[int], list[np.ndarray]]]:
        """Yield `(indices, features)` per batch; with `sort_by_length`, batches come
        longest first, else in input order."""
        if sort_by_length:
            batches = length_sorted_batches([len(s) for s in sequences], batch_size)
        else:
            batches = (list(range(i, min(i + batch_size, len(sequences))))
                       for i in range(0, len(sequences), batch_size))
        for batch in batches:
            yield batch, self.encode_batch([sequences[i] for i in batch])
