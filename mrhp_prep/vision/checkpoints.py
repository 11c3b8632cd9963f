"""Loading detector weights: the checkpoint layouts people have, mapped onto our modules.

Supported files (no code runs while reading any of them):

- MILVLG `bua-caffe-frcn-r101_with_attributes.pth` (bottom-up-attention.pytorch): a
  `torch.save` dict, read with `torch.load(weights_only=True)`.
- detectron2-style `faster_rcnn_from_caffe_attr.pkl` (py-bottom-up-attention): a pickle of
  numpy arrays, read with `safe_pickle.load_restricted`.
- A state dict of this package's own modules (`.pth`), e.g. written by a test.
- torchvision's `fasterrcnn_resnet50_fpn_v2` state dict, for the second model.

Key map (source key -> our key), applied in order, first match wins; {s} is res2, res3 or
res4, {i} a block index, {name} conv1, conv2, conv3 or shortcut:

=============================================== ======================================
source key (both checkpoint layouts)            our key
=============================================== ======================================
backbone.stem.conv1.weight                      backbone.stem.conv1.conv.weight
backbone.stem.conv1.norm.*                      backbone.stem.conv1.norm.*
backbone.{s}.{i}.{name}.weight                  backbone.{s}.{i}.{name}.conv.weight
backbone.{s}.{i}.{name}.norm.*                  backbone.{s}.{i}.{name}.norm.*
roi_heads.res5.{i}.{name}.weight                roi_heads.res5.{i}.{name}.conv.weight
roi_heads.res5.{i}.{name}.norm.*                roi_heads.res5.{i}.{name}.norm.*
proposal_generator.rpn_head.conv.*              rpn.head.conv.*
proposal_generator.rpn_head.objectness_logits.* rpn.head.objectness_logits.*
proposal_generator.rpn_head.anchor_deltas.*     rpn.head.anchor_deltas.*
roi_heads.box_predictor.cls_score.*             roi_heads.box_predictor.cls_score.*
roi_heads.box_predictor.bbox_pred.*             roi_heads.box_predictor.bbox_pred.*
=============================================== ======================================

The attribute predictor's keys differ by layout: `roi_heads.box_predictor.X` becomes
`roi_heads.attribute_predictor.Y`:

====================== ====================== ================
X in MILVLG `.pth`     X in detectron2 `.pkl` Y (ours)
====================== ====================== ================
cls_embed.weight       cls_embedding.weight   cls_embed.weight
attr_linear1.*         fc_attr.*              fc.*
attr_linear2.*         attr_score.*           attr_score.*
====================== ====================== ================

Shapes (ResNet-101, 1601 classes, 401 attributes, 12 anchors) and layout conversions:

===================== ======================= ======================= ==========================
tensor                MILVLG `.pth`           detectron2 `.pkl`       ours
===================== ======================= ======================= ==========================
RPN objectness_logits [24, 512, 1, 1]: 12     [12, 512, 1, 1] sigmoid [24, ...] as MILVLG;
                      background then 12      logits, anchors         detectron2's logit becomes
                      object logits, anchors  size-major              the object row with a zero
                      ratio-major                                     background row, anchors
                                                                      reordered
RPN anchor_deltas     [48, 512, 1, 1]         [48, ...] size-major    ratio-major
cls_score             [1601, 2048],           [1601, 2048],           background first
                      background first        background last
bbox_pred             [6404, 2048]            [6400, 2048] (no        [6404, 2048] (zero rows
                                              background rows)        added)
class embedding       [1601 or 1602, 256]     [1601, 256],            [1601, 256], rows past
                                              background last         1601 never indexed
attribute fc          [512, 2304]             [512, 2304]             [512, 2304]
attribute scores      [401, 512], "none"      [401, 512], "none"      "none" first
                      first                   last
===================== ======================= ======================= ==========================

Batch-norm statistics (`running_mean`, `running_var`, `weight`, `bias`) are kept as
frozen affine layers; `num_batches_tracked` entries are ignored. MILVLG's persistent
anchor buffer (`ANCHOR_KEY`, [12, 4]) replaces the RPN's built anchors, as it does in
that model; the log says which anchors run.
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from ..verify import file_sha256
from ..errors import InputError
from ..torch_files import why_unreadable
from .safe_pickle import load_restricted

log = logging.getLogger(__name__)

RANDOM = "random"

_RENAMES_COMMON = [
    (re.compile(r"^backbone\.stem\.conv1\.weight$"), "backbone.stem.conv1.conv.weight"),
    (re.compile(r"^backbone\.(res[234])\.(\d+)\.(conv[123]|shortcut)\.weight$"),
     r"backbone.\1.\2.\3.conv.weight"),
    (re.compile(r"^roi_heads\.res5\.(\d+)\.(conv[123]|shortcut)\.weight$"),
     r"roi_heads.res5.\1.\2.conv.weight"),
    (re.compile(r"^(backbone\.stem\.conv1|backbone\.res[234]\.\d+\.(?:conv[123]|shortcut)"
                r"|roi_heads\.res5\.\d+\.(?:conv[123]|shortcut))\.norm\."
                r"(weight|bias|running_mean|running_var)$"), r"\1.norm.\2"),
    (re.compile(r"^proposal_generator\.rpn_head\.(conv|objectness_logits|anchor_deltas)\."
                r"(weight|bias)$"), r"rpn.head.\1.\2"),
    (re.compile(r"^roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)$"),
     r"roi_heads.box_predictor.\1.\2"),
]
_RENAMES_MILVLG = [
    (re.compile(r"^roi_heads\.box_predictor\.cls_embed\.weight$"),
     "roi_heads.attribute_predictor.cls_embed.weight"),
    (re.compile(r"^roi_heads\.box_predictor\.attr_linear1\.(weight|bias)$"),
     r"roi_heads.attribute_predictor.fc.\1"),
    (re.compile(r"^roi_heads\.box_predictor\.attr_linear2\.(weight|bias)$"),
     r"roi_heads.attribute_predictor.attr_score.\1"),
]
_RENAMES_DETECTRON2 = [
    (re.compile(r"^roi_heads\.box_predictor\.cls_embedding\.weight$"),
     "roi_heads.attribute_predictor.cls_embed.weight"),
    (re.compile(r"^roi_heads\.box_predictor\.fc_attr\.(weight|bias)$"),
     r"roi_heads.attribute_predictor.fc.\1"),
    (re.compile(r"^roi_heads\.box_predictor\.attr_score\.(weight|bias)$"),
     r"roi_heads.attribute_predictor.attr_score.\1"),
]
# Entries a checkpoint may carry that have no counterpart here and mean nothing for inference.
# The reference's persistent anchor buffer (A = 12 cell anchors, [A, 4]).
ANCHOR_KEY = "proposal_generator.anchor_generator.cell_anchors.0"

_IGNORED = re.compile(r"(num_batches_tracked$|^pixel_(mean|std)$|^__|^matching_heuristics$)")


@dataclass
class LoadReport:
    """What happened to every key: used, missing, unexpected, of the wrong shape."""

    layout: str
    sha256: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    anchors: str = "built"      # "checkpoint" when the file's cell anchors are used


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} dict from a `.pth`/`.pt` (weights_only) or `.pkl` file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("weights file not found", file=str(path),
                         hint="pass the path of a checkpoint, or --weights random for a smoke run")
    if path.suffix == ".pkl":
        with open(path, "rb") as handle:
            raw = load_restricted(handle, source=str(path))
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for foreign or unsafe files
            raise InputError(f"cannot read as a weights-only torch checkpoint: "
                             f"{why_unreadable(exc, path)}",
                             file=str(path), hint="pass a state dict saved with torch.save, or "
                                                  "a detectron2 .pkl") from exc
    if isinstance(raw, Mapping) and isinstance(raw.get("model"), Mapping):
        raw = raw["model"]
    elif isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping):
        raise InputError(f"expected a mapping of parameter names to arrays, found "
                         f"{type(raw).__name__}", file=str(path))
    tensors = {}
    for name, value in raw.items():
        if isinstance(value, np.ndarray):
            tensors[str(name)] = torch.from_numpy(np.ascontiguousarray(value))
        elif isinstance(value, torch.Tensor):
            tensors[str(name)] = value
    _refuse_non_finite(tensors, path)
    return tensors


def _refuse_non_finite(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """A NaN or inf weight makes every score NaN and every image silently regionless."""
    bad = []
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and tensor.numel():
            count = int((~torch.isfinite(tensor)).sum())
            if count:
                bad.append(f"{name} ({count} of {tensor.numel()} values)")
    if bad:
        raise InputError(f"{len(bad)} tensor(s) hold NaN or infinite values: "
                         + ", ".join(bad[:10]) + (" ..." if len(bad) > 10 else ""),
                         file=str(path), hint="the checkpoint is damaged (or was saved from a "
                                              "diverged run): download or export it again")


def detect_layout(keys: set[str]) -> str:
    if "roi_heads.box_predictor.attr_linear1.weight" in keys:
        return "milvlg"
    if "roi_heads.box_predictor.fc_attr.weight" in keys:
        return "detectron2"
    if "roi_heads.attribute_predictor.fc.weight" in keys:
        return "native"
    if "roi_heads.box_head.fc6.weight" in keys or "backbone.fpn.inner_blocks.0.0.weight" in keys:
        return "torchvision"
    return "unknown"


def _rename(name: str, rules: list) -> str | None:
    for pattern, replacement in rules:
        if pattern.match(name):
            return pattern.sub(replacement, name)
    return None


def _size_major_to_ratio_major(tensor: torch.Tensor, num_sizes: int, num_ratios: int,
                               per_anchor: int) -> torch.Tensor:
    """Reorder the anchor axis (dim 0, `per_anchor` rows each) from size-major to ratio-major."""
    rest = tensor.shape[1:]
    grouped = tensor.reshape(num_sizes, num_ratios, per_anchor, *rest)
    return grouped.transpose(0, 1).reshape(num_sizes * num_ratios * per_anchor, *rest)


def _background_last_to_first(tensor: torch.Tensor) -> torch.Tensor:
    return torch.cat([tensor[-1:], tensor[:-1]], dim=0)


def convert_detectron2(state: dict[str, torch.Tensor], num_sizes: int = 4,
                       num_ratios: int = 3) -> dict[str, torch.Tensor]:
    """Bring the detectron2 layout's heads into the Caffe/MILVLG layout (see the table)."""
    out = dict(state)
    prefix = "proposal_generator.rpn_head."
    for suffix in ("weight", "bias"):
        key = prefix + "objectness_logits." + suffix
        if key in out:
            logits = _size_major_to_ratio_major(out[key], num_sizes, num_ratios, 1)
            # softmax([0, z])[1] == sigmoid(z): a zero background logit keeps the scores.
            out[key] = torch.cat([torch.zeros_like(logits), logits], dim=0)
        key = prefix + "anchor_deltas." + suffix
        if key in out:
            out[key] = _size_major_to_ratio_major(out[key], num_sizes, num_ratios, 4)
    box = "roi_heads.box_predictor."
    for key in (box + "cls_score.weight", box + "cls_score.bias", box + "cls_embedding.weight",
                box + "attr_score.weight", box + "attr_score.bias"):
        if key in out:
            out[key] = _background_last_to_first(out[key])
    for suffix in ("weight", "bias"):
        key = box + "bbox_pred." + suffix
        if key in out:
            out[key] = torch.cat([torch.zeros_like(out[key][:4]), out[key]], dim=0)
    return out


def map_butd_state(state: dict[str, torch.Tensor], layout: str,
                   report: LoadReport) -> dict[str, torch.Tensor]:
    if layout == "native":
        return dict(state)
    if layout == "detectron2":
        state = convert_detectron2(state)
        rules = _RENAMES_COMMON + _RENAMES_DETECTRON2
    elif layout == "milvlg":
        rules = _RENAMES_COMMON + _RENAMES_MILVLG
    else:
        raise ValueError(layout)
    mapped = {}
    for name, tensor in state.items():
        target = _rename(name, rules)
        if target is None:
            (report.ignored if _IGNORED.search(name) else report.unexpected).append(name)
        else:
            mapped[target] = tensor
    return mapped


def load_into(model: nn.Module, mapped: dict[str, torch.Tensor], report: LoadReport) -> None:
    """Copy `mapped` into `model`, checking every name and shape; raises on any gap."""
    own = model.state_dict()
    usable = {}
    for name, tensor in mapped.items():
        if name not in own:
            if _IGNORED.search(name):
                report.ignored.append(name)
            else:
                report.unexpected.append(name)
            continue
        expected = own[name].shape
        if tensor.shape != expected:
            # The class embedding may carry a row per class plus one that is never indexed.
            if (name.endswith("cls_embed.weight") and tensor.ndim == 2
                    and tensor.shape[1] == expected[1] and tensor.shape[0] > expected[0]):
                tensor = tensor[: expected[0]]
            else:
                report.mismatched.append(f"{name}: file {tuple(tensor.shape)}, "
                                         f"model {tuple(expected)}")
                continue
        usable[name] = tensor.to(own[name].dtype)
    report.missing = sorted(set(own) - set(usable) - {m.split(":")[0] for m in report.mismatched})
    if report.missing or report.mismatched:
        lines = [f"missing ({len(report.missing)}): " + ", ".join(report.missing[:40])
                 + (" ..." if len(report.missing) > 40 else "")] if report.missing else []
        if report.mismatched:
            lines.append(f"wrong shape ({len(report.mismatched)}): "
                         + "; ".join(report.mismatched[:40]))
        if report.unexpected:
            lines.append(f"unexpected ({len(report.unexpected)}): "
                         + ", ".join(report.unexpected[:40]))
        raise InputError(f"the checkpoint ({report.layout} layout) does not fit the model:\n  "
                         + "\n  ".join(lines),
                         hint="check that the file is the ResNet-101 bottom-up-attention "
                              "model with attributes (or pass --model to match it)")
    model.load_state_dict(usable, strict=False)
    report.loaded = len(usable)
    if report.unexpected:
        log.warning("ignored %d checkpoint entries with no place in the model: %s",
                    len(report.unexpected), ", ".join(report.unexpected[:20]))


def load_butd_weights(model: nn.Module, path: str | Path) -> LoadReport:
    state = read_checkpoint(path)
    layout = detect_layout(set(state))
    report = LoadReport(layout=layout, sha256=file_sha256(path))
    if layout not in ("milvlg", "detectron2", "native"):
        sample = ", ".join(sorted(state)[:8])
        raise InputError(f"unrecognised checkpoint layout (first keys: {sample})", file=str(path),
                         hint="expected MILVLG bua-caffe-frcn-r101_with_attributes.pth or "
                              "detectron2 faster_rcnn_from_caffe_attr.pkl")
    # Only MILVLG's layout orders its anchors as this model does (ratio-major).
    anchors = state.pop(ANCHOR_KEY, None) if layout == "milvlg" else None
    load_into(model, map_butd_state(state, layout, report), report)
    if anchors is not None:
        _use_checkpoint_anchors(model, anchors, path)
        report.anchors = "checkpoint"
    log.info("loaded %d tensors from %s (%s layout, sha256 %s); RPN cell anchors: %s",
             report.loaded, path, layout, report.sha256[:12],
             "the checkpoint's" if anchors is not None else "built (Caffe's generate_anchors)")
    return report


def _use_checkpoint_anchors(model: nn.Module, anchors: torch.Tensor, path) -> None:
    """The reference model keeps its cell anchors in a persistent buffer, so the ones in
    the file are the ones it uses."""
    try:
        model.rpn.set_cell_anchors(anchors)
    except ValueError as exc:
        raise InputError(f"{ANCHOR_KEY}: {exc}", file=str(path), field=ANCHOR_KEY,
                         hint="check that the file is the 12-anchor bottom-up-attention "
                              "model") from None


def init_random(model: nn.Module, seed: int) -> None:
    """Seeded random weights that keep activations finite through 100+ layers.

    Features from these weights mean nothing; they exist so the whole pipeline can run
    where no checkpoint is at hand.
    """
    from torchvision.ops.misc import FrozenBatchNorm2d

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                std = (2.0 / fan_in) ** 0.5 if "rpn" not in name else 0.01
                module.weight.normal_(0.0, std, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, 0.01, generator=generator)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, FrozenBatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
                # Damp each residual branch's output so depth does not blow activations up,
                # and bring 0-255 pixels to unit scale at the stem.
                if name.endswith("conv3.norm"):
                    module.weight.fill_(0.2)
                elif name.endswith("stem.conv1.norm"):
                    module.weight.fill_(1.0 / 64)


def warn_random_weights(seed: int) -> None:
    message = (f"RANDOM WEIGHTS (seed {seed}): the detector is untrained, so its boxes, classes "
               "and features mean nothing. Use this only to try the pipeline; pass --weights "
               "PATH to a checkpoint for real features.")
    log.warning("%s", "!" * 20 + " " + message + " " + "!" * 20)
    text = "WARNING: " + message
    if sys.stderr.isatty():     # red and bold where a person reads it, plain in log files
        text = f"\033[1;31m{text}\033[0m"
    print(text, file=sys.stderr, flush=True)
