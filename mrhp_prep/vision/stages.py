"""The RoI stages besides extraction: `merge-rois`, `import-rois`, `export-rois`."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from ..cache import MANIFEST_NAME, open_stage, read_failures
from ..errors import InputError
from ..faults import OutputFolder, environment_guard
from ..locks import FolderLock
from ..verify import FILES_KEY, file_record, file_records, read_verified
from .interop import ImportFailure, export_npz, export_tsv, read_source
from .parts import PARTS_DIR, list_parts, next_part_path
from .region_checks import storage_check
from .store import FORMAT_VERSION, SOURCES_KEY, STORE_NAME, RoiStore
from .store_join import consolidate, merge_virtual, source_name
from .store_write import write_store

log = logging.getLogger(__name__)

# Settings that may differ between shards of one extraction.
_SHARD_KEYS = {"shard_index"}


def merge_rois(shards: list[str], *, out: str | None = None, cache_dir: str = "cache",
               force: bool = False, virtual: bool = False):
    """Join finished extract-rois shard folders into one store: the regions copied into one
    self-contained rois.h5 (features in one block, memory-mapped by readers), or with
    `virtual` only the index, over HDF5 virtual datasets that read the shard files where
    they are. One folder alone gives a copy in the block layout (a repack of a store written
    by an older version, whose features are chunked)."""
    if not shards:
        raise InputError("give the shard folders to merge", hint="mrhp-prep merge-rois DIR...")
    infos = [read_verified(s, stage="extract-rois") for s in shards]
    for shard, info in zip(shards, infos):
        if info.get("format_version") != FORMAT_VERSION:
            raise InputError(f"store format {info.get('format_version')}, this version writes "
                             f"{FORMAT_VERSION} (object/attribute ids changed)", file=shard,
                             hint="re-run extract-rois for this shard")
    reference = {k: v for k, v in infos[0]["settings"].items() if k not in _SHARD_KEYS}
    for shard, info in zip(shards, infos):
        settings = {k: v for k, v in info["settings"].items() if k not in _SHARD_KEYS}
        if settings != reference:
            changed = sorted(k for k in set(settings) | set(reference)
                             if settings.get(k) != reference.get(k))
            raise InputError(f"this shard was extracted with other settings ({', '.join(changed)})",
                             file=shard, hint="merge shards of one extraction only")
    num_shards = int(reference["num_shards"])
    indices = sorted(int(i["settings"]["shard_index"]) for i in infos)
    if indices != list(range(num_shards)):
        raise InputError(f"expected shards 0..{num_shards - 1} exactly once, got {indices}",
                         hint="pass every shard folder of the extraction, once each")
    dataset = infos[0].get("dataset") or Path(shards[0]).resolve().parent.parent.name
    # The copy and the virtual store hold the same regions in other files: the mode counts
    # (a virtual merge keeps the settings, and so the folder, merges had before copies).
    merge_settings = {"num_shards": num_shards, **({} if virtual else {"layout": "copy"})}
    run = open_stage("merge-rois", dataset=dataset, settings=merge_settings,
                     inputs={f"shard{i}": s for i, s in enumerate(shards)},
                     format_version=FORMAT_VERSION, out=out, cache_dir=cache_dir, force=force)
    if run.complete:
        return run
    with run.computing():
        by_index = sorted((int(info["settings"]["shard_index"]), Path(shard), info)
                          for shard, info in zip(shards, infos))
        ordered = [shard for _, shard, _ in by_index]
        merged_settings = {**reference, "num_shards": 1, "shard_index": 0,
                           "merged_from": num_shards}
        attrs = {"model": infos[0].get("model", ""),
                 "weights_sha256": infos[0].get("weights_sha256", ""), "settings": merged_settings}
        sources = [s / STORE_NAME for s in ordered]
        if virtual:
            images, regions, _ = merge_virtual(sources, run.path / STORE_NAME, attrs=attrs)
            # What the store reads, as checked above: a reader refuses a shard written since.
            extra = {"note": "rois.h5 reads the regions from the shard folders; keep them in "
                             "place", SOURCES_KEY: {
                                 source_name(source, run.path / STORE_NAME):
                                     _shard_record(info, source)
                                 for (_, _, info), source in zip(by_index, sources)}}
        else:
            with RoiStore(sources[0]) as first:
                feature_dim, dtype = first.feature_dim, first.row_layout("features")[1]
            images, regions, _ = consolidate(
                sources, run.path / STORE_NAME, attrs=attrs, feature_dim=feature_dim,
                feature_dtype=dtype, kind="shards",
                hint="merge shards of one extraction (same --num-shards)")
            extra = {"note": "rois.h5 holds every region: the shard folders may be deleted"}
        for _, shard, _ in by_index:
            for failure in read_failures(shard):
                run.add_failure(**failure)
        run.finish({"images": images + len(run.failures), "extracted": images, "regions": regions,
                    "failed": len(run.failures), "shards": num_shards},
                   model=attrs["model"], weights_sha256=attrs["weights_sha256"], dataset=dataset,
                   feature_dim=infos[0].get("feature_dim"), store=STORE_NAME,
                   shards=[str(Path(s).resolve()) for s in ordered], virtual=virtual,
                   files=file_records(run.path, [STORE_NAME]), **extra)
    return run


def _shard_record(info: dict, store: Path) -> dict:
    """A shard's rois.h5 record as its MANIFEST.json holds it (checked when it was opened),
    or computed for a shard written before records were kept."""
    return (info.get(FILES_KEY) or {}).get(STORE_NAME) or file_record(store)


def import_rois(source: str, *, fmt: str, manifest: str | None = None, suffix: str = ".jpg",
                feature_dtype: str = "float32", name: str | None = None, out: str | None = None,
                cache_dir: str = "cache", force: bool = False, part_size: int = 256):
    """Read features other tools wrote (npz / tsv / mcr-pth) into a store folder."""
    source_path = Path(source)
    if not source_path.exists():
        raise InputError("not found", file=source)
    id_of_name: dict[str, str] | None = None
    dataset = name or source_path.resolve().name
    inputs = {"source": source}
    settings = {"format": fmt, "suffix": suffix, "feature_dtype": feature_dtype}
    if manifest is not None:
        from ..data.manifest import Manifest

        loaded = Manifest(manifest)
        # A name is an image's path under the images root (the reference tools' trees) or
        # its id (what export-rois writes); a path wins where both could match.
        id_of_name = dict(zip(loaded.images["image_id"], loaded.images["image_id"]))
        id_of_name.update(zip(loaded.images["path"], loaded.images["image_id"]))
        dataset = name or loaded.name
        inputs["manifest"] = manifest
        settings["names"] = "path-or-id"
    run = open_stage("import-rois", dataset=dataset, settings=settings, inputs=inputs,
                     format_version=FORMAT_VERSION, out=out, cache_dir=cache_dir, force=force)
    if run.complete:
        return run
    with run.computing():
        shutil.rmtree(run.path / PARTS_DIR, ignore_errors=True)  # imports are quick: start over
        (run.path / PARTS_DIR).mkdir()
        dtype = np.float16 if feature_dtype == "float16" else np.float32
        pending, seen, feature_dim = [], set(), None
        for record in read_source(fmt, source_path, suffix):
            if isinstance(record, ImportFailure):
                run.add_failure(record.item, record.reason, detail=record.detail)
                continue
            if id_of_name is not None:
                if record.image_id not in id_of_name:
                    run.add_failure(record.image_id, "not-in-manifest",
                                    detail="no manifest image has this path or id")
                    continue
                record.image_id = id_of_name[record.image_id]
            if record.image_id in seen:
                run.add_failure(record.image_id, "duplicate", detail="kept the first occurrence")
                continue
            checked = storage_check(record.features, {"boxes": record.boxes}, dtype,
                                    "the source file")
            if checked.problem is not None:  # no region, NaN or inf, beyond float16
                run.add_failure(record.image_id, checked.problem[0],
                                detail=checked.problem[1])
                continue
            dim = record.features.shape[1] if record.features.ndim == 2 else 0
            if feature_dim is None and record.count:
                feature_dim = dim
            if record.count and dim != feature_dim:
                run.add_failure(record.image_id, "feature-size",
                                detail=f"{dim}-d features, the others are {feature_dim}-d")
                continue
            seen.add(record.image_id)
            record.features = checked.features
            pending.append(record)
            if len(pending) >= part_size:
                write_store(next_part_path(run.path), pending, feature_dim=feature_dim,
                            feature_dtype=dtype)
                pending = []
        feature_dim = feature_dim or 2048
        if pending:
            write_store(next_part_path(run.path), pending, feature_dim=feature_dim,
                        feature_dtype=dtype)
        attrs = {"model": f"imported:{fmt}", "weights_sha256": "", "settings": settings}
        images, regions, _ = consolidate(list_parts(run.path), run.path / STORE_NAME,
                                         attrs=attrs, feature_dim=feature_dim,
                                         feature_dtype=dtype)
        run.finish({"images": images, "regions": regions, "failed": len(run.failures)},
                   model=attrs["model"], feature_dim=feature_dim, store=STORE_NAME,
                   files=file_records(run.path, [STORE_NAME]))
        shutil.rmtree(run.path / PARTS_DIR, ignore_errors=True)
    return run


def export_rois(store_path: str, *, fmt: str, out: str) -> int:
    """Write a store's regions as MILVLG-style npz files or a bottom-up-attention TSV.
    A stage folder's store is checked against its MANIFEST.json first."""
    if fmt not in ("npz", "tsv"):
        raise InputError(f"unknown format {fmt!r}", hint="choose npz or tsv")
    path = Path(store_path)
    folder = path if path.is_dir() else path.parent
    opened = (RoiStore.of_stage(folder) if (folder / MANIFEST_NAME).is_file()
              else RoiStore(path))
    target = OutputFolder(Path(out), "--out")
    # One export into a folder at a time; a full or read-only disk names the folder.
    with opened as store, environment_guard(target):
        target.path.mkdir(parents=True, exist_ok=True)
        with FolderLock(target.path):
            return _export(store, fmt, target.path)


def _export(store: RoiStore, fmt: str, target: Path) -> int:
    if store.format_version < FORMAT_VERSION:
        raise InputError(f"store format {store.format_version}: its object and attribute "
                         "ids may be counted from 1, the formats written here count from 0",
                         file=str(store.path), hint="re-run extract-rois or import-rois")
    if fmt == "npz":
        return export_npz(store, target)
    return export_tsv(store, target)
