"""A model's parameters per top-level submodule: what `train --dry-run` prints and every run
folder keeps as `model.txt`.

One row per child of the model (in the order the model registers them), with its trainable
and frozen parameters and how many of them are word-embedding tables (`nn.Embedding`
weights, which the papers leave out of their counts). A parameter shared by two children (one
text encoder run for both fields) is counted once, under the first. The last line is
`total without embedding tables N`: the trainable parameters outside embedding tables, the
figure the papers report (`RankingModel.num_parameters()`).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..models.base import RankingModel

OWN = "(the model's own)"


@dataclass(frozen=True)
class ParameterRow:
    name: str
    trainable: int
    frozen: int
    embedding: int      # of trainable + frozen, in nn.Embedding tables


def parameter_rows(model: nn.Module) -> list[ParameterRow]:
    """One row per top-level submodule (plus the model's direct parameters, if any)."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    seen: set[int] = set()

    def row(name: str, parameters) -> ParameterRow:
        trainable = frozen = embedding = 0
        for parameter in parameters:
            if id(parameter) in seen:
                continue
            seen.add(id(parameter))
            count = parameter.numel()
            if parameter.requires_grad:
                trainable += count
            else:
                frozen += count
            if id(parameter) in embedding_ids:
                embedding += count
        return ParameterRow(name, trainable, frozen, embedding)

    rows = [row(name, child.parameters()) for name, child in model.named_children()]
    own = row(OWN, model.parameters(recurse=False))
    if own.trainable or own.frozen:
        rows.append(own)
    return rows


def parameter_table(model: RankingModel) -> str:
    """The table as text; its last line starts with `total without embedding tables`."""
    rows = parameter_rows(model)
    header = ("submodule", "trainable", "frozen", "embedding tables")
    cells = [(r.name, f"{r.trainable:,}", f"{r.frozen:,}", f"{r.embedding:,}") for r in rows]
    total = ("total", f"{sum(r.trainable for r in rows):,}", f"{sum(r.frozen for r in rows):,}",
             f"{sum(r.embedding for r in rows):,}")
    widths = [max(len(line[i]) for line in (header, *cells, total)) for i in range(4)]

    def line(values) -> str:
        return "  ".join([values[0].ljust(widths[0])]
                         + [v.rjust(w) for v, w in zip(values[1:], widths[1:])]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    body = [line(header), rule, *(line(c) for c in cells), rule, line(total)]
    body.append(f"total without embedding tables {model.num_parameters():,}")
    return "\n".join(body) + "\n"
