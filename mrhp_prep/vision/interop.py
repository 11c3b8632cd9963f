"""Region features other tools wrote, into the RoI store, and back out.

Readers (all without running code from the files):

- `npz`: MILVLG bottom-up-attention output, one `np.savez_compressed` per image with `x`
  [n, D], `bbox` [n, 4], `num_bbox`, `image_h`, `image_w` and `info` (a pickled dict with
  `objects_id`, `objects_conf`, `attrs_id`, `attrs_conf`; read by the restricted
  unpickler). Flat `objects_id`... keys, as `export-rois` writes, are read too.
- `tsv`: the bottom-up-attention TSV, tab-separated, arrays base64-encoded. Six columns
  (image_id, image_w, image_h, num_boxes, boxes, features; the Caffe tool) or ten
  (img_id, img_h, img_w, objects_id, objects_conf, attrs_id, attrs_conf, num_boxes, boxes,
  features; the detectron2 port and LXMERT).
- `mcr-pth`: MCR's per-item `{item}/{item}.pth`, a `torch.save` list of the npz dicts,
  read with `torch.load(weights_only=True)` allowing numpy arrays only.

Image ids: for npz and mcr-pth files, the path of the image relative to the import root
(`.../{item}/pic_0.npz` -> `.../{item}/pic_0.jpg`); with `--manifest`, such paths are
mapped to the manifest's image ids. TSV rows keep the id written in the file.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Iterator

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError
from ..torch_files import why_unreadable
from .safe_pickle import read_npz_entry
from .store import ImageRegions

log = logging.getLogger(__name__)

IMPORT_FORMATS = ("npz", "tsv", "mcr-pth")
EXPORT_FORMATS = ("npz", "tsv")
TSV_FIELDS_CAFFE = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")
TSV_FIELDS_ATTR = ("img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id",
                   "attrs_conf", "num_boxes", "boxes", "features")


class ImportFailure(Exception):
    def __init__(self, item: str, reason: str, detail: str = ""):
        super().__init__(f"{item}: {reason} {detail}")
        self.item, self.reason, self.detail = item, reason, detail


def _regions_from_dict(image_id: str, data: dict) -> ImageRegions:
    """MILVLG-style dict (x, bbox, image_h, image_w, info or flat ids) -> ImageRegions."""
    features = np.asarray(data["x"], dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"x has shape {features.shape}, expected [n, D]")
    n = features.shape[0]
    boxes = np.asarray(data["bbox"], dtype=np.float32).reshape(n, 4)
    info = data.get("info")
    if isinstance(info, np.ndarray) and info.dtype == object and info.shape == ():
        info = info.item()
    info = info if isinstance(info, dict) else {}

    def field(name: str, dtype, default):
        value = data.get(name, info.get(name))
        if value is None:
            return np.full(n, default, dtype=dtype)
        return np.asarray(value, dtype=dtype).reshape(n)

    return ImageRegions(
        image_id=image_id, image_h=int(np.asarray(data.get("image_h", info.get("image_h", 0)))),
        image_w=int(np.asarray(data.get("image_w", info.get("image_w", 0)))),
        features=features, boxes=boxes, object_id=field("objects_id", np.int32, -1),
        object_conf=field("objects_conf", np.float32, 0.0),
        attr_id=field("attrs_id", np.int32, -1), attr_conf=field("attrs_conf", np.float32, 0.0))


def _relative_image_id(path: Path, root: Path, suffix: str) -> str:
    return path.relative_to(root).with_suffix(suffix).as_posix()


def read_npz_tree(root: Path, suffix: str = ".jpg") -> Iterator[ImageRegions | ImportFailure]:
    for path in sorted(root.rglob("*.npz")):
        image_id = _relative_image_id(path, root, suffix)
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {key: read_npz_entry(npz, key, source=str(path)) for key in npz.files}
            yield _regions_from_dict(image_id, data)
        except InputError as exc:
            yield ImportFailure(image_id, "unsafe-or-unreadable", str(exc))
        except (OSError, ValueError, KeyError, EOFError) as exc:
            yield ImportFailure(image_id, "unreadable", f"{path}: {exc}")


def _decode_array(text: str, dtype, shape) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=dtype).reshape(shape)


def read_tsv(path: Path) -> Iterator[ImageRegions | ImportFailure]:
    with open(path, "r", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            cols = line.split("\t")
            where = f"{path}:{line_number}"
            try:
                if len(cols) == len(TSV_FIELDS_CAFFE):
                    row = dict(zip(TSV_FIELDS_CAFFE, cols))
                    image_id = row["image_id"]
                elif len(cols) == len(TSV_FIELDS_ATTR):
                    row = dict(zip(TSV_FIELDS_ATTR, cols))
                    image_id = row["img_id"]
                else:
                    raise ValueError(f"{len(cols)} columns; expected 6 (image_id, image_w, "
                                     "image_h, num_boxes, boxes, features) or 10")
                n = int(row["num_boxes"])
                raw_features = base64.b64decode(row["features"])
                dim = len(raw_features) // (4 * n) if n else 0
                features = np.frombuffer(raw_features, dtype=np.float32).reshape(n, dim)
                data = {"x": features, "bbox": _decode_array(row["boxes"], np.float32, (n, 4)),
                        "image_h": int(row.get("image_h", row.get("img_h"))),
                        "image_w": int(row.get("image_w", row.get("img_w")))}
                if "objects_id" in row:
                    data["objects_id"] = _decode_array(row["objects_id"], np.int64, (n,))
                    data["objects_conf"] = _decode_array(row["objects_conf"], np.float32, (n,))
                    data["attrs_id"] = _decode_array(row["attrs_id"], np.int64, (n,))
                    data["attrs_conf"] = _decode_array(row["attrs_conf"], np.float32, (n,))
                yield _regions_from_dict(image_id, data)
            except (ValueError, KeyError, TypeError) as exc:
                yield ImportFailure(f"line {line_number}", "bad-row", f"{where}: {exc}")


def _numpy_safe_globals() -> list:
    import numpy.dtypes as dtypes

    core = np._core if hasattr(np, "_core") else np.core
    allowed = [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype]
    allowed += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType")]
    return allowed


def read_mcr_tree(root: Path, suffix: str = ".jpg") -> Iterator[ImageRegions | ImportFailure]:
    import torch

    for path in sorted(root.rglob("*.pth")):
        item_dir = path.parent
        try:
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                entries = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # weights_only refusals and damaged files alike
            yield ImportFailure(str(path.relative_to(root)), "unsafe-or-unreadable",
                                why_unreadable(exc, path))
            continue
        if not isinstance(entries, (list, tuple)):
            yield ImportFailure(str(path.relative_to(root)), "unreadable",
                                "expected a list of per-image dicts, found "
                                f"{type(entries).__name__}")
            continue
        for index, entry in enumerate(entries):
            info = entry.get("info") if isinstance(entry, dict) else None
            if isinstance(info, np.ndarray) and info.shape == ():
                info = info.item()
            stem = str(info.get("image_id")) if isinstance(info, dict) and "image_id" in info \
                else f"pic_{index}"
            image_id = _relative_image_id(item_dir / (Path(stem).name + suffix), root, suffix)
            try:
                yield _regions_from_dict(image_id, dict(entry))
            except (ValueError, KeyError, TypeError) as exc:
                yield ImportFailure(image_id, "unreadable", f"{path}[{index}]: {exc}")


def read_source(fmt: str, source: Path,
                suffix: str = ".jpg") -> Iterator[ImageRegions | ImportFailure]:
    if fmt == "npz":
        return read_npz_tree(source, suffix)
    if fmt == "mcr-pth":
        return read_mcr_tree(source, suffix)
    if fmt == "tsv":
        files = [source] if source.is_file() else sorted(
            p for p in source.rglob("*") if p.suffix in (".tsv", ".csv"))
        return (record for file in files for record in read_tsv(file))
    raise InputError(f"unknown format {fmt!r}", hint="choose npz, tsv or mcr-pth")


# --- export ---------------------------------------------------------------------------------

def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _safe_relative(image_id: str) -> Path:
    rel = Path(image_id)
    if rel.is_absolute() or ".." in rel.parts:
        raise InputError(f"image id {image_id!r} would leave the output folder")
    return rel


def export_npz(store, out: Path) -> int:
    """One npz per image, named by the image id with its suffix replaced by `.npz` (float32
    `x`, `bbox`, `num_bbox`, `image_h`, `image_w`, flat `objects_id`, `objects_conf`,
    `attrs_id`, `attrs_conf`; no pickled objects)."""
    targets: dict[Path, str] = {}
    for image_id in store.image_ids:
        target = out / _safe_relative(image_id).with_suffix(".npz")
        if target in targets:   # x.jpg and x.png: one file would silently replace the other
            raise InputError(f"image ids {targets[target]!r} and {image_id!r} would both be "
                             f"written to {target.name}", file=str(store.path),
                             hint="export as tsv, which keeps each id whole")
        targets[target] = image_id
    count = 0
    for target, image_id in targets.items():
        data = store.image(image_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written beside and renamed (no fsync per file: a rerun writes them all again), so
        # a full disk leaves no cut-short file behind.
        part = target.with_name(f".{target.name}.part")
        try:
            with open(part, "wb") as handle:
                np.savez_compressed(
                    handle, x=data["features"].astype(np.float32), bbox=data["boxes"],
                    num_bbox=np.int64(len(data["boxes"])), image_h=np.int64(data["image_h"]),
                    image_w=np.int64(data["image_w"]), image_id=np.str_(image_id),
                    objects_id=data["object_id"].astype(np.int64),
                    objects_conf=data["object_conf"], attrs_id=data["attr_id"].astype(np.int64),
                    attrs_conf=data["attr_conf"])
            part.replace(target)
        finally:
            part.unlink(missing_ok=True)
        count += 1
    return count


def export_tsv(store, out: Path) -> int:
    """`rois.tsv`, the ten-column layout (ids int64, everything else float32, base64)."""
    for image_id in store.image_ids:   # checked first: no half-written file
        if "\t" in image_id or "\n" in image_id:
            raise InputError(f"image id {image_id!r} contains a tab or newline; TSV cannot "
                             "hold it", hint="export as npz")
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    with atomic_path(out / "rois.tsv") as tmp, \
            open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        for image_id in store.image_ids:
            data = store.image(image_id)
            n = len(data["boxes"])
            handle.write("\t".join([
                image_id, str(data["image_h"]), str(data["image_w"]),
                _b64(data["object_id"].astype(np.int64)),
                _b64(data["object_conf"].astype(np.float32)),
                _b64(data["attr_id"].astype(np.int64)), _b64(data["attr_conf"].astype(np.float32)),
                str(n), _b64(data["boxes"].astype(np.float32)),
                _b64(data["features"].astype(np.float32))]) + "\n")
            count += 1
    return count
