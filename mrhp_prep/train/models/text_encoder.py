"""A transformer text encoder trained inside a ranking model (embed-text `--mode ids` stores).

With an ids store the batch carries token ids; `FineTunedEncoder` runs the transformer named in
the store on them and hands the model its last layer's per-token states [B, L, H], where
frozen features [B, L, Dt] would be read in features mode (same positions, same masks).

Settings (`model:` section of every model's config, `ENCODER_KEYS`; declared in
`settings/model_settings.py`, docs/settings.md): text_encoder (`auto` is resolved from the
store's mode by `settings/config.py`), finetune_layers (all | N: train the last N transformer
layers and what sits above them; embeddings and the lower layers stay frozen, out of the
optimizer and, unless encoder_checkpoint: full, out of checkpoints), shared_encoder,
gradient_checkpointing, encoder_checkpoint.

`train.encoder_lr` is the encoder's learning rate (null = `train.lr`); `parameter_groups`
gives the optimizer the two groups. The base model's name and a hash of its weights travel in
every checkpoint (the module's extra state) and are checked when one is loaded, so the frozen
part that checkpoints leave out is known to come back unchanged.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Mapping

import torch
from torch import nn

from ...errors import InputError
from ..settings.model_settings import ENCODER, ENCODER_KEYS
from ..settings.typed_sections import fields_of

_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block)\.(\d+)\.")


def weights_sha256(module: nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and bytes, in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        # bytes through uint8: numpy has no bfloat16, and a 0-d tensor cannot be viewed
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _layer_index(name: str) -> int | None:
    found = _LAYER.search(name)
    return int(found.group(1)) if found else None


class FineTunedEncoder(nn.Module):
    """A `transformers` encoder: ids [B, L] and mask [B, L] -> last-layer states [B, L, H].

    Rows that are the same text (a training group's product, 8 rows of one product) are
    encoded once and copied back, so a batch of 4 groups runs the encoder on 4 product texts.
    """

    def __init__(self, model: str, finetune_layers: str | int = "all",
                 gradient_checkpointing: bool = False, store_frozen: bool = False):
        super().__init__()
        from transformers import AutoModel

        try:
            self.transformer = AutoModel.from_pretrained(model)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot load the text encoder {model!r}: {exc}",
                             field="text store",
                             hint="the ids store names the model it was tokenized for; that "
                                  "folder must exist (a relative path counts from where train "
                                  "runs; hub names need a network)") from exc
        self.base_name = str(model)
        broken = [name for name, tensor in self.transformer.state_dict().items()
                  if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
        if broken:     # weights enter here: a NaN would surface only as a diverged loss
            raise InputError(f"the text encoder {model!r} holds NaN or inf weights "
                             f"({', '.join(broken[:3])}{' ...' if len(broken) > 3 else ''})",
                             field="text encoder",
                             hint="restore the model folder (download or copy it again)")
        self.base_sha256 = weights_sha256(self.transformer)
        self.dim = int(self.transformer.config.hidden_size)
        self.num_layers = int(self.transformer.config.num_hidden_layers)
        self.store_frozen = store_frozen
        self._freeze(None if finetune_layers == "all" else int(finetune_layers))
        if gradient_checkpointing:
            # non-reentrant: works with frozen lower layers (inputs without grad) and DDP;
            # newer transformers name the method activation_checkpointing_enable
            if hasattr(self.transformer, "activation_checkpointing_enable"):
                self.transformer.activation_checkpointing_enable(
                    activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                self.transformer.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False})

    def _freeze(self, trained_layers: int | None) -> None:
        """Train the last `trained_layers` layers and what sits above them, or everything
        (None). Never the pooler: its output is not used, and a parameter without gradients
        would need DDP's search for unused parameters."""
        first = 0 if trained_layers is None else self.num_layers - min(trained_layers,
                                                                       self.num_layers)
        for name, parameter in self.transformer.named_parameters():
            layer = _layer_index(name)
            if name.startswith("pooler."):
                trains = False
            elif "embed" in name.split(".")[0]:
                trains = trained_layers is None
            elif layer is not None:
                trains = layer >= first
            else:  # above the layers (a final norm): trains with the top layer
                trains = trained_layers is None or trained_layers > 0
            parameter.requires_grad_(trains)

    def train(self, mode: bool = True) -> "FineTunedEncoder":
        """As nn.Module.train, except that an encoder none of whose weights train
        (`finetune_layers: 0`) always runs in eval mode: a fixed feature extractor, no dropout."""
        super().train(mode)
        if not any(p.requires_grad for p in self.transformer.parameters()):
            self.transformer.eval()
        return self

    def get_extra_state(self) -> dict:
        return {"base_model": self.base_name, "base_sha256": self.base_sha256}

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, Mapping) or state.get("base_sha256") != self.base_sha256:
            found = state.get("base_model") if isinstance(state, Mapping) else None
            raise InputError(
                f"the checkpoint was trained from the text encoder {found!r}, whose weights "
                f"differ from those of {self.base_name!r}", field="text encoder",
                hint="use an ids store made with the run's base model")

    def frozen_keys(self, prefix: str) -> set[str]:
        """State-dict keys (under `prefix`) that come back from the base model on load."""
        if self.store_frozen:
            return set()
        trained = {name for name, p in self.transformer.named_parameters() if p.requires_grad}
        return {f"{prefix}transformer.{name}" for name in self.transformer.state_dict()
                if name not in trained}

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids [B, L] int64, mask [B, L] bool -> states [B, L, H] float32 (0 at padding)."""
        rows = torch.cat([ids, mask.long()], dim=1)
        unique, inverse = torch.unique(rows, dim=0, return_inverse=True)
        length = max(int(mask.sum(dim=1).max()), 1)   # the longest text, not --max-length
        unique_ids, unique_mask = unique[:, :length], unique[:, ids.shape[1]:][:, :length]
        pad = self.transformer.config.pad_token_id or 0
        out = self.transformer(input_ids=unique_ids.masked_fill(unique_mask == 0, pad),
                               attention_mask=unique_mask).last_hidden_state
        states = out.float()[inverse]
        if length < ids.shape[1]:
            states = nn.functional.pad(states, (0, 0, 0, ids.shape[1] - length))
        return states * mask[..., None].to(states.dtype)


class EncoderOptions(fields_of(ENCODER, "model")):
    """The text encoder's settings in a `model:` section (`ENCODER_KEYS`)."""


def build_text_encoders(config: Mapping, model_name: str | None) -> dict[str, FineTunedEncoder]:
    """{"product": encoder, "review": encoder}: one module twice when `shared_encoder`."""
    if not model_name:
        raise InputError("the ids store does not name its transformer", field="tokenizer",
                         hint="re-run embed-text --mode ids --model NAME")
    settings = EncoderOptions.from_config({k: v for k, v in config.items() if k in ENCODER_KEYS})
    options = dict(finetune_layers=settings.finetune_layers,
                   gradient_checkpointing=bool(settings.gradient_checkpointing),
                   store_frozen=settings.encoder_checkpoint == "full")
    product = FineTunedEncoder(model_name, **options)
    review = product if settings.shared_encoder else FineTunedEncoder(model_name, **options)
    return {"product": product, "review": review}


def text_encoders(model: nn.Module) -> dict[str, FineTunedEncoder]:
    """State-dict prefix ("review_tokens.encoder.") -> encoder, for every name an encoder of
    `model` is registered under (a shared encoder has two)."""
    return {f"{name}." if name else "": module
            for name, module in model.named_modules(remove_duplicate=False)
            if isinstance(module, FineTunedEncoder)}


def frozen_encoder_keys(model: nn.Module) -> set[str]:
    """State-dict keys of every text encoder in `model` that checkpoints leave out."""
    keys: set[str] = set()
    for prefix, module in text_encoders(model).items():
        keys |= module.frozen_keys(prefix)
    return keys


def parameter_groups(model: nn.Module, lr: float, encoder_lr: float | None) -> list[dict]:
    """Adam parameter groups: [the rest at `lr`, the text encoders' trained layers at
    `encoder_lr` (or `lr`)]; frozen parameters are in neither. The encoder group is left out
    when nothing of an encoder trains."""
    encoder_ids = {id(p) for m in model.modules() if isinstance(m, FineTunedEncoder)
                   for p in m.parameters()}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in encoder_ids]
    encoder = [p for p in model.parameters() if p.requires_grad and id(p) in encoder_ids]
    groups = [{"params": rest, "lr": lr, "name": "model"}]
    if encoder:
        groups.append({"params": encoder, "lr": lr if encoder_lr is None else float(encoder_lr),
                       "name": "text_encoder"})
    return groups
