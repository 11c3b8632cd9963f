"""The `fetch-images` command: options in, one call to `fetch_stage.fetch_images`, a summary out."""

from __future__ import annotations

import re
import time

import click

from ..cli_options import manifest_option, shard_options, stage_options
from ..faults import human_bytes
from ..stage_summary import fail_if_none_done, report

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
          "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30}


class ByteSize(click.ParamType):
    """A number of bytes: 5000000, 500kB, 20MB, 20MiB, 1G."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        match = _SIZE.match(str(value))
        unit = (match[2] or "").lower() if match else None
        if not match or unit not in _UNITS:
            self.fail(f"{value!r} is not a size such as 20MB, 500kB or 1048576", param, ctx)
        size = int(float(match[1]) * _UNITS[unit])
        if size < 1:
            self.fail("the size must be at least 1 byte", param, ctx)
        return size


@click.command("fetch-images")
@manifest_option()
@click.option("--images-root", type=click.Path(file_okay=False), required=True,
              help="Where images go, as {split}/{prd|rvw}/{item_id}/pic_{k}.jpg.")
@click.option("--workers", type=click.IntRange(1, 1024), default=16,
              help="Downloads in flight at once.")
@click.option("--per-host", type=click.IntRange(min=1), default=4,
              help="Downloads in flight at once to any one host.")
@click.option("--retries", type=click.IntRange(min=0), default=4,
              help="Further attempts after a failure that may pass (timeout, 429, 5xx).")
@click.option("--backoff", type=click.FloatRange(min=0), default=1.0,
              help="Seconds before the first retry; doubled each retry, with jitter.")
@click.option("--max-backoff", type=click.FloatRange(min=0), default=60.0,
              help="Longest back-off between two attempts, in seconds.")
@click.option("--max-retry-after", type=click.FloatRange(min=0), default=120.0,
              help="Honour a 429/503 Retry-After up to this many seconds; a longer one fails "
                   "the image (a later run retries it).")
@click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
              help="Seconds to open a connection.")
@click.option("--read-timeout", type=click.FloatRange(min=0, min_open=True), default=30.0,
              help="Seconds to wait for any data from the server.")
@click.option("--max-bytes", type=ByteSize(), default="20MiB",
              help="Largest image accepted (checked on Content-Length and while receiving).")
@click.option("--max-redirects", type=click.IntRange(min=0), default=5,
              help="Redirects followed per image.")
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=95,
              help="Quality of the JPEG written when a server sends another format "
                   "(JPEG files are kept byte for byte).")
@click.option("--verify-existing", is_flag=True,
              help="Decode files already in the images root and fetch the broken ones again "
                   "(for folders filled by other tools).")
@shard_options
@stage_options
def fetch_images(manifest, images_root, workers, per_host, retries, backoff, max_backoff,
                 max_retry_after, connect_timeout, read_timeout, max_bytes, max_redirects,
                 jpeg_quality, verify_existing, num_shards, shard_index, out, cache_dir, force):
    """Download the images of a manifest into IMAGES_ROOT, resuming where a run stopped.

    Images already there are skipped; failures are retried with back-off and listed in the
    stage's failures.jsonl; the report folder is printed last.

    Example: mrhp-prep fetch-images --manifest cache/amazon-electronics/ingest/<fp>
    --images-root data/images
    """
    from .fetch import FetchSettings
    from .fetch_stage import fetch_images as run_fetch

    settings = FetchSettings(workers=workers, per_host=per_host, retries=retries,
                             backoff=backoff, max_backoff=max_backoff,
                             max_retry_after=max_retry_after, connect_timeout=connect_timeout,
                             read_timeout=read_timeout, max_bytes=max_bytes,
                             max_redirects=max_redirects, jpeg_quality=jpeg_quality,
                             verify_existing=verify_existing)
    started = time.time()
    run = run_fetch(manifest, images_root, settings, num_shards=num_shards,
                    shard_index=shard_index, out=out, cache_dir=cache_dir, force=force)
    info = run.manifest()
    counts = info["counts"]
    rows = {"images": counts["images"], "downloaded": counts["downloaded"],
            "already present": counts["already_present"],
            "failed": f"{counts['failed']} (see failures.jsonl)",
            "converted to JPEG": counts["converted_to_jpeg"],
            "received": human_bytes(counts["bytes_downloaded"]),
            "rate": f"{counts['images_per_s']:.1f} images/s",
            "images root": info["images_root"]}
    shard = info["shard"]
    if shard["num_shards"] > 1:
        rows["shard"] = f"{shard['shard_index']} of {shard['num_shards']}"
    if info["timings"]["finished"] < started:
        rows["note"] = "nothing to do: an earlier run fetched every image"
    report("fetch-images finished", rows, run.path)
    fail_if_none_done(counts["downloaded"] + counts["already_present"], counts["images"],
                      "images", run.path)
    return str(run.path)
