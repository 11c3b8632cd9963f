"""The `fetch-images` stage: which images of a manifest to fetch, the run of `Fetcher` over
them (`fetch.py`) under the stage folder's lock, and the report it leaves in that folder."""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from pathlib import Path, PurePosixPath

from .fetch import FetchJob, Fetcher, FetchResult, FetchSettings, file_is_complete

log = logging.getLogger(__name__)

STAGE = "fetch-images"
FORMAT_VERSION = 1


def plan_jobs(images, root: Path, num_shards: int = 1,
              shard_index: int = 0) -> tuple[list[FetchJob], list[tuple[str, str, str]]]:
    """FetchJobs for this shard's rows of the manifest's images table.

    Returns (jobs, refused) where refused lists (image_id, url, reason) for rows whose path
    would leave the images root.
    """
    from ..shards import shard_of
    from .manifest import leaves_images_root

    jobs, refused, seen = [], [], set()
    for image_id, url, relpath in zip(images["image_id"], images["url"], images["path"]):
        if shard_of(image_id, num_shards) != shard_index:
            continue
        if leaves_images_root(relpath):
            refused.append((image_id, url, f"unsafe path '{relpath}' in the manifest"))
            continue
        if relpath in seen:
            continue
        seen.add(relpath)
        jobs.append(FetchJob(image_id=image_id, url=url,
                             dest=root.joinpath(*PurePosixPath(relpath).parts)))
    return jobs, refused


def fetch_images(manifest_path: str | os.PathLike, images_root: str | os.PathLike,
                 settings: FetchSettings = FetchSettings(), *, num_shards: int | None = None,
                 shard_index: int | None = None, out: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike = "cache", force: bool = False,
                 show_progress: bool = True):
    """Fetch this shard's images of a manifest; returns the finished StageRun.

    A finished run with no failures whose files are all still there is not repeated (unless
    `settings.verify_existing`); a run that had failures is run again (present files are
    skipped, failed ones retried). The counts are in `run.manifest()["counts"]`; failures in
    the folder's failures.jsonl.
    """
    from ..cache import open_stage
    from ..faults import OutputFolder
    from ..progress import progress
    from ..shards import resolve_shard
    from .manifest import Manifest

    manifest = Manifest(manifest_path)
    num_shards, shard_index = resolve_shard(num_shards, shard_index)
    root = Path(images_root).resolve()
    stage_settings = {"images_root": str(root), "max_bytes": settings.max_bytes,
                      "jpeg_quality": settings.jpeg_quality, "num_shards": num_shards,
                      "shard_index": shard_index}
    jobs, refused = plan_jobs(manifest.images, root, num_shards, shard_index)

    def open_run(**how):
        return open_stage(STAGE, dataset=manifest.name, settings=stage_settings,
                          inputs={"manifest": manifest_path}, format_version=FORMAT_VERSION,
                          out=out, cache_dir=cache_dir, **how)

    run = open_run(force=force)
    if run.complete:
        previous = run.manifest()
        missing = sum(not file_is_complete(job.dest) for job in jobs)
        if previous["num_failures"] == 0 and not settings.verify_existing and not missing:
            log.info("all %d images already fetched into %s", len(jobs), root)
            return run
        log.info("fetching again what is missing: %d images failed last time, %d files are "
                 "not there%s", previous["num_failures"], missing,
                 ", and present files are verified" if settings.verify_existing else "")
        # The finished folder opened again as an unfinished one (under its lock); its report
        # is rewritten at the end.
        run = open_run(reopen=True)

    with run.computing(OutputFolder(root, "--images-root")):
        shard = f" (shard {shard_index} of {num_shards})" if num_shards > 1 else ""
        log.info("fetching %d images%s into %s", len(jobs) + len(refused), shard, root)
        bar = progress(total=len(jobs), desc=STAGE, unit="img") if show_progress else None

        failed_so_far = 0

        def on_result(result: FetchResult) -> None:
            nonlocal failed_so_far
            if result.status == "failed":
                failed_so_far += 1
            if bar is not None:
                bar.update(1)
                if result.status == "failed":
                    bar.set_postfix_str(f"{failed_so_far} failed", refresh=False)

        try:
            summary = Fetcher(settings, on_result=on_result, root=root).run(jobs)
        finally:
            if bar is not None:
                bar.close()

        for image_id, url, reason in refused:
            run.add_failure(image_id, reason, image_id=image_id, url=url, attempts=0)
        for result in summary.failures:
            job = result.job
            run.add_failure(job.image_id, result.reason, image_id=job.image_id, url=job.url,
                            attempts=job.attempts, http_status=result.http_status,
                            path=str(job.dest.relative_to(root)))
        failed = summary.failed + len(refused)
        counts = {"images": len(jobs) + len(refused), "downloaded": summary.downloaded,
                  "already_present": summary.present, "failed": failed,
                  "converted_to_jpeg": summary.converted,
                  "replaced_invalid": summary.replaced, "bytes_downloaded": summary.num_bytes,
                  "seconds": round(summary.seconds, 3),
                  "images_per_s": round(summary.images_per_s, 2)}
        run.finish(counts, images_root=str(root),
                   shard={"num_shards": num_shards, "shard_index": shard_index},
                   source_formats=dict(summary.formats), fetch_settings=asdict(settings))
    log.info("images in %s; report in %s", root, run.path)
    return run
