"""Join the outputs of an embed-text job array into one folder without copying shards.

Each job (`--num-shards N --shard-index I`) writes its own folder. `merge_text` checks that
the N folders are the N shards of one computation, then links their Arrow shards into a new
embed-text folder, numbered on (job 0's shards first), with the vocabulary and vectors files
of job 0 (every job writes the same ones). Hard links where the file system allows, else
symbolic links.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..cache import StageRun, open_stage
from ..errors import InputError
from ..verify import FILES_KEY, file_record, read_verified
from .embed import FIELDS, FORMAT_VERSION, STAGE
from .shards import shard_name, shard_paths
from .store import static_files


def _link(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        os.symlink(source.resolve(), target)


def merge_text(folders: list[str | Path], *, out: str | Path | None = None,
               cache_dir: str | Path = "cache", force: bool = False) -> StageRun:
    folders = [Path(f) for f in folders]
    infos = [read_verified(f, stage=STAGE) for f in folders]
    settings = [dict(i["settings"]) for i in infos]
    common = {k: v for k, v in settings[0].items() if k != "shard_index"}
    count = settings[0]["num_shards"]
    for folder, item in zip(folders, settings):
        if {k: v for k, v in item.items() if k != "shard_index"} != common:
            raise InputError("these folders come from different embed-text settings",
                             file=str(folder),
                             hint="merge only the jobs of one job array")
    if any(i["inputs"] != infos[0]["inputs"] for i in infos):
        raise InputError("these folders were made from different inputs", file=str(folders[0]))
    indices = sorted(s["shard_index"] for s in settings)
    if indices != list(range(count)):
        missing = sorted(set(range(count)) - set(indices))
        raise InputError(f"need the {count} shards 0..{count - 1} once each; got {indices}"
                         + (f" (missing {missing})" if missing else ""),
                         hint="pass every job's output folder")
    ordered = [f for _, f in sorted(zip([s["shard_index"] for s in settings], folders))]
    info_of = dict(zip(folders, infos))
    extras = static_files(ordered[0])
    job0_files = {name: _record(info_of[ordered[0]], ordered[0], name) for name in extras}
    for folder in ordered[1:]:
        for name in extras:     # the digests recorded (and checked above), not the bytes again
            if not (folder / name).is_file():
                raise InputError(f"{name} is missing from this job's folder",
                                 file=str(folder / name), hint="merge only the jobs of one "
                                                               "job array")
            if _record(info_of[folder], folder, name) != job0_files[name]:
                raise InputError(f"{name} differs between the jobs", file=str(folder / name))

    merged_settings = {**common, "num_shards": 1, "shard_index": 0, "merged_from": count}
    run = open_stage(STAGE, dataset=_dataset_name(ordered[0]), settings=merged_settings,
                     inputs={f"shard-{i}": f for i, f in enumerate(ordered)},
                     format_version=FORMAT_VERSION, out=out, cache_dir=cache_dir, force=force)
    if run.complete:
        return run
    with run.computing():
        files = {}
        for name in extras:
            _link(ordered[0] / name, run.path / name)
            files[name] = job0_files[name]
        fields = {}
        for field in FIELDS:
            number = 0
            rows = 0
            for folder in ordered:
                for path in shard_paths(folder, field):
                    _link(path, run.path / shard_name(field, number))
                    files[shard_name(field, number)] = _record(info_of[folder], folder, path.name)
                    number += 1
                rows += info_of[folder]["fields"][field]["rows"]
            fields[field] = {"rows": rows, "shards": number}
        first = infos[[s["shard_index"] for s in settings].index(0)]
        keep = {k: v for k, v in first.items()
                if k in ("mode", "dim", "tokenizer", "vector_source", "vocab_sizes", "coverage",
                         "encoder")}
        per_job = {f"job_{s['shard_index']}": i["fields"] for s, i in zip(settings, infos)}
        run.finish({f"{field}_rows": v["rows"] for field, v in fields.items()},
                   fields=_sum_fields(infos), jobs=per_job, merged=[str(f) for f in ordered],
                   linked=True, files=dict(sorted(files.items())), command="merge-text",
                   **keep)
    return run


def _record(info: dict, folder: Path, name: str) -> dict:
    """A job's file record as its manifest holds it (checked when the job was opened), or
    computed for a job folder written before records were kept."""
    return (info.get(FILES_KEY) or {}).get(name) or file_record(folder / name)


def _dataset_name(folder: Path) -> str:
    # <cache>/<dataset>/embed-text/<fingerprint>/ when the job wrote into the cache.
    return folder.parent.parent.name if folder.parent.name == STAGE else "merged"


def _sum_fields(infos: list[dict]) -> dict:
    total: dict = {}
    for info in infos:
        for field, values in info["fields"].items():
            into = total.setdefault(field, {})
            for key, value in values.items():
                if isinstance(value, int):
                    into[key] = into.get(key, 0) + value
    return total
