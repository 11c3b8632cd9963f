"""Downloading the images of the `fetch-images` stage (`fetch_stage.py`) into the crawl layout.

Images land at `IMAGES_ROOT/{split}/{prd|rvw}/{item_id}/pic_{k}.jpg` (the manifest's `path`
column), the layout the earlier systems' crawlers wrote and where `extract-rois` reads them.
The stage's own folder in the cache (`cache/<dataset>/fetch-images/<fingerprint>/`) holds only
the bookkeeping: `MANIFEST.json` (counts, settings, the images root) and `failures.jsonl`.

How a download proceeds:

1. A file already under its final name is complete (only a verified file is ever renamed
   there) and is skipped; `verify_existing` decodes such files and fetches again the broken
   ones, for folders crawled by other tools.
2. The body streams into a temporary `.pic_k.jpg.XXXX.part` beside the final name, is decoded
   in full, converted to JPEG when it is another format, flushed to disk, and only then
   renamed. A killed run leaves at most `.part` files, removed when the image is fetched again.
3. Failures that may pass (timeouts, refused or dropped connections, 408/425/429/5xx) are tried
   again after an exponential back-off with jitter, or after the server's Retry-After on 429/503,
   which also pauses every request to that host. Others (404, an HTML page, a non-image, a file
   over the size limit) fail at once.
4. A scheduler keeps at most `workers` downloads in flight and at most `per_host` per host;
   workers never sleep through a back-off, so one slow host does not hold up the others.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import random
import tempfile
import time
from collections import Counter, OrderedDict, deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .. import __version__
from ..atomic import plain_file_mode
from ..errors import EnvironmentFault
from ..faults import DENIED_ERRNOS, OutputFolder, diagnose
from .fetch_http import FetchError, HttpClient, HttpSettings, check_url
from .image_check import check_and_convert, verify_image

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class FetchSettings:
    """How to fetch. Of these, only `max_bytes` and `jpeg_quality` enter the fingerprint."""

    workers: int = 16
    per_host: int = 4
    retries: int = 4                 # further attempts after the first
    backoff: float = 1.0             # seconds before the first retry; doubles each time
    max_backoff: float = 60.0
    max_retry_after: float = 120.0   # a longer Retry-After fails the image instead
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_bytes: int = 20 * 2**20
    max_redirects: int = 5
    jpeg_quality: int = 95
    verify_existing: bool = False

    def http(self) -> HttpSettings:
        return HttpSettings(connect_timeout=self.connect_timeout,
                            read_timeout=self.read_timeout, max_bytes=self.max_bytes,
                            max_redirects=self.max_redirects,
                            user_agent=f"mrhp-prep/{__version__} (image fetcher)")


@dataclass
class FetchJob:
    """One image to fetch: where from, where to."""

    image_id: str
    url: str
    dest: Path
    attempts: int = 0
    host: str = ""


@dataclass
class FetchResult:
    job: FetchJob
    status: str                      # "downloaded" | "present" | "failed"
    num_bytes: int = 0               # bytes received over the network
    source_format: str | None = None
    reason: str | None = None
    http_status: int | None = None


@dataclass
class FetchSummary:
    downloaded: int = 0
    present: int = 0
    failed: int = 0
    converted: int = 0               # stored as JPEG after decoding another format
    replaced: int = 0                # existing files that failed verify_existing
    num_bytes: int = 0
    seconds: float = 0.0
    formats: Counter = field(default_factory=Counter)
    failures: list[FetchResult] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.downloaded / self.seconds if self.seconds > 0 else 0.0


class Fetcher:
    """Runs FetchJobs with bounded concurrency, retries and per-host politeness."""

    def __init__(self, settings: FetchSettings,
                 on_result: Callable[[FetchResult], None] | None = None,
                 rng: random.Random | None = None, root: Path | None = None):
        self.settings = settings
        self.root = root            # the images root, named when its disk fails
        self.on_result = on_result
        self.rng = rng or random.Random()
        self.client = HttpClient(settings.http(), max_idle_per_host=settings.per_host)

    def run(self, jobs: Iterable[FetchJob]) -> FetchSummary:
        started = time.monotonic()
        summary = FetchSummary()
        todo, existing = [], []
        for job in jobs:
            try:
                job.host = (check_url(job.url).hostname or "").lower()
            except FetchError as error:
                self._record(summary, FetchResult(job, "failed", reason=error.reason))
                continue
            if file_is_complete(job.dest):
                existing.append(job)
            else:
                todo.append(job)
        try:
            with ThreadPoolExecutor(self.settings.workers, thread_name_prefix="fetch") as pool:
                try:
                    todo += self._check_existing(existing, pool, summary)
                    self._schedule(todo, pool, summary)
                except BaseException:   # Ctrl-C or a full disk: only what is in flight ends
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
        finally:
            self.client.close()
        summary.seconds = time.monotonic() - started
        return summary

    # -- files already there -----------------------------------------------------------------

    def _check_existing(self, jobs: list[FetchJob], pool: ThreadPoolExecutor,
                        summary: FetchSummary) -> list[FetchJob]:
        """Count complete files as present; with verify_existing, return the broken ones."""
        if not self.settings.verify_existing:
            for job in jobs:
                self._record(summary, FetchResult(job, "present"))
            return []
        broken = []
        for job, problem in zip(jobs, pool.map(_problem_with, (j.dest for j in jobs))):
            if problem is None:
                self._record(summary, FetchResult(job, "present"))
            else:
                log.info("%s: existing file is broken (%s); fetching it again", job.dest, problem)
                summary.replaced += 1
                broken.append(job)
        return broken

    # -- the scheduler -----------------------------------------------------------------------

    def _schedule(self, jobs: list[FetchJob], pool: ThreadPoolExecutor,
                  summary: FetchSummary) -> None:
        settings = self.settings
        queues: OrderedDict[str, deque[FetchJob]] = OrderedDict()
        for job in jobs:
            queues.setdefault(job.host, deque()).append(job)
        delayed: list[tuple[float, int, FetchJob]] = []     # (ready time, tie-break, job)
        tie = itertools.count()
        active: Counter = Counter()
        paused_until: dict[str, float] = {}                  # host -> Retry-After deadline
        in_flight: dict[Future, FetchJob] = {}

        while queues or delayed or in_flight:
            now = time.monotonic()
            while delayed and delayed[0][0] <= now:
                job = heapq.heappop(delayed)[2]
                queues.setdefault(job.host, deque()).append(job)
            # Hand out work host by host (round robin) while slots are free.
            for host in list(queues):
                if len(in_flight) >= settings.workers:
                    break
                queue = queues[host]
                while (queue and len(in_flight) < settings.workers
                       and active[host] < settings.per_host
                       and paused_until.get(host, 0.0) <= now):
                    job = queue.popleft()
                    job.attempts += 1
                    active[host] += 1
                    in_flight[pool.submit(self._attempt, job)] = job
                if queue:
                    queues.move_to_end(host)
                else:
                    del queues[host]

            wake_times = [t for t, _, _ in delayed[:1]]
            wake_times += [paused_until[h] for h in queues if paused_until.get(h, 0.0) > now]
            timeout = max(0.0, min(wake_times) - now) if wake_times else None
            if not in_flight:
                time.sleep(timeout if timeout is not None else 0.0)
                continue
            done, _ = wait(in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
            for future in done:
                job = in_flight.pop(future)
                active[job.host] -= 1
                outcome = future.result()
                if isinstance(outcome, EnvironmentFault):
                    raise outcome
                if isinstance(outcome, FetchResult):
                    self._record(summary, outcome)
                    continue
                retry_in = self._retry_delay(job, outcome)
                if retry_in is None:
                    self._record(summary, FetchResult(job, "failed", reason=outcome.reason,
                                                      http_status=outcome.status))
                    continue
                if outcome.retry_after is not None:
                    paused_until[job.host] = max(paused_until.get(job.host, 0.0),
                                                 time.monotonic() + outcome.retry_after)
                log.debug("%s: %s; retry %d in %.2fs", job.url, outcome.reason, job.attempts,
                          retry_in)
                heapq.heappush(delayed, (time.monotonic() + retry_in, next(tie), job))

    def _retry_delay(self, job: FetchJob, error: FetchError) -> float | None:
        """Seconds before the next attempt, or None when the image has failed for good."""
        settings = self.settings
        if not error.retryable or job.attempts > settings.retries:
            return None
        if error.retry_after is not None:
            if error.retry_after > settings.max_retry_after:
                error.reason += (f" (the server asks to wait {error.retry_after:g}s, more than "
                                 f"--max-retry-after {settings.max_retry_after:g}s)")
                return None
            return error.retry_after
        delay = min(settings.max_backoff, settings.backoff * 2 ** (job.attempts - 1))
        return delay * self.rng.uniform(0.5, 1.0)   # jitter spreads retries out

    # -- one attempt (runs in a worker thread) -----------------------------------------------

    def _attempt(self, job: FetchJob) -> FetchResult | FetchError | EnvironmentFault:
        dest = job.dest
        temporary: list[Path] = []
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if job.attempts == 1:
                _remove_stale_parts(dest)
            fd, part = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
            temporary.append(Path(part))
            with os.fdopen(fd, "wb") as handle:
                download = self.client.get(job.url, handle)
            keep, source_format = check_and_convert(Path(part), self.settings.jpeg_quality)
            temporary.append(keep)
            with open(keep, "rb+") as handle:
                os.fsync(handle.fileno())
            os.chmod(keep, plain_file_mode())  # shared image folders stay readable
            os.replace(keep, dest)
            return FetchResult(job, "downloaded", num_bytes=download.num_bytes,
                               source_format=source_format, http_status=download.status)
        except FetchError as error:
            return error
        except OSError as exc:
            # A full or read-only disk, or an images root this user may not write, fails
            # every image alike: it ends the run instead. A folder of one image that may not
            # be written fails that image.
            root = self.root or dest.parent
            fault = (None if _denied_below(exc, root)
                     else diagnose(exc, [OutputFolder(root, "--images-root")]))
            return fault if fault is not None else FetchError(f"cannot write {dest}: {exc}")
        except Exception as exc:  # one bad item must never end a long run
            log.debug("unexpected error fetching %s", job.url, exc_info=True)
            return FetchError(f"unexpected error: {type(exc).__name__}: {exc}")
        finally:
            for path in temporary:
                path.unlink(missing_ok=True)

    def _record(self, summary: FetchSummary, result: FetchResult) -> None:
        if result.status == "downloaded":
            summary.downloaded += 1
            summary.num_bytes += result.num_bytes
            summary.formats[result.source_format] += 1
            if result.source_format not in ("JPEG", "MPO"):
                summary.converted += 1
        elif result.status == "present":
            summary.present += 1
        else:
            summary.failed += 1
            summary.failures.append(result)
        if self.on_result is not None:
            self.on_result(result)


def file_is_complete(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def _problem_with(path: Path) -> str | None:
    try:
        verify_image(path)
    except FetchError as error:
        return error.reason
    return None


def _denied_below(exc: OSError, root: Path) -> bool:
    """Whether `exc` is a permission error on a path whose folder lies inside `root` (an
    image's own folder, a split's), not on the root itself or a folder above it."""
    if exc.errno not in DENIED_ERRNOS or not exc.filename:
        return False
    folder = Path(os.fsdecode(exc.filename)).absolute().parent
    return root.absolute() in folder.parents


def _remove_stale_parts(dest: Path) -> None:
    """Temporary files a killed run left beside `dest`."""
    for stale in dest.parent.glob(f".{dest.name}.*.part"):
        stale.unlink(missing_ok=True)
