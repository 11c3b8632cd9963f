"""Crawling images: the earlier systems' way (`urlretrieve` per URL, one after another or from
a pool of threads) against `fetch-images`, on the same loopback server with a simulated
network.

    python benchmarks/fetch_images.py [--images 150] [--latency 0.03] [--workers 16]
                                      [--repeats 3] [--quick]

Two network models are measured: (a) only a per-request latency (the server waits `--latency`
before answering), and (b) the same plus the cost of opening a connection (the server waits
2 x latency before reading a new connection's first request, as TCP and TLS handshakes cost
two to three round trips over HTTPS). Loopback itself has no handshake cost, so (a) is the
case least favourable to connection reuse.

The server runs in its own process so that it does not share the interpreter lock with the
client. Each way downloads every image into an empty folder; medians over the repeats are
printed with their ratios. `fetch-images` does more per image than the naive ways (it decodes
every file in full and flushes it to disk before the rename), so the ratio is what a user
gets with those checks included. A second run over a complete folder shows the resume cost.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import fetch_server as fs  # noqa: E402

from mrhp_prep.data.fetch import FetchJob, FetchSettings, Fetcher  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def serve(latency: float, pipe) -> None:
    """Child process: serve /img/{i}.jpg (real photographs, 256 px) after `latency` seconds.

    Each message from the parent sets the connection cost; "stop" ends the server.
    """
    server = fs.ImageServer()
    bodies = [fs.photo(name, "JPEG", max_side=256) for name in PHOTOS]
    for i, body in enumerate(bodies):
        server.routes[f"/img/{i}.jpg"] = fs.serve(body, delay=latency)
    pipe.send((server.port, sum(map(len, bodies)) / len(bodies)))
    while (message := pipe.recv()) != "stop":
        server.connect_delay = message
        pipe.send("ok")
    server.close()


def urls_for(port: int, count: int) -> list[str]:
    # A distinct query per image so nothing could be cached along the way.
    return [f"http://127.0.0.1:{port}/img/{i % len(PHOTOS)}.jpg?n={i}" for i in range(count)]


def dest(root: Path, i: int) -> Path:
    return root / "train" / "prd" / f"B{i:08d}" / "pic_0.jpg"


def naive_one(url: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    urllib.request.urlretrieve(url, path)


def naive_sequential(urls: list[str], root: Path) -> None:
    for i, url in enumerate(urls):
        naive_one(url, dest(root, i))


def naive_threads(urls: list[str], root: Path, workers: int) -> None:
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(naive_one, urls, [dest(root, i) for i in range(len(urls))]))


def ours(urls: list[str], root: Path, workers: int) -> int:
    settings = FetchSettings(workers=workers, per_host=workers)
    jobs = [FetchJob(f"B{i:08d}/pic_0.jpg", url, dest(root, i)) for i, url in enumerate(urls)]
    summary = Fetcher(settings).run(jobs)
    assert summary.failed == 0, summary.failures[:3]
    return summary.downloaded


def timed(func, *args) -> float:
    start = time.perf_counter()
    func(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=150)
    parser.add_argument("--latency", type=float, default=0.03,
                        help="seconds the server waits before answering each request")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="48 images, 3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.images, args.repeats = 48, 3

    parent_end, child_end = multiprocessing.Pipe()
    child = multiprocessing.Process(target=serve, args=(args.latency, child_end), daemon=True)
    child.start()
    port, mean_size = parent_end.recv()
    urls = urls_for(port, args.images)
    ours_name = f"fetch-images, {args.workers} workers"
    ways = {
        "earlier: urlretrieve, sequential": lambda root: naive_sequential(urls, root),
        f"earlier: urlretrieve, {args.workers} threads": lambda root: naive_threads(
            urls, root, args.workers),
        ours_name: lambda root: ours(urls, root, args.workers),
    }
    models = {"(a) request latency only": 0.0,
              "(b) plus 2 x latency per new connection": 2 * args.latency}
    print(f"{args.images} images of {mean_size / 1000:.0f} kB on average, "
          f"{args.latency * 1000:.0f} ms server latency, median of {args.repeats} runs")
    resume = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for model, connect_cost in models.items():
                parent_end.send(connect_cost)
                parent_end.recv()
                medians = {}
                for name, way in ways.items():
                    times = []
                    for repeat in range(args.repeats):
                        root = Path(tmp) / f"run{repeat}"
                        times.append(timed(way, root))
                        if name == ours_name:
                            resume.append(timed(way, root))   # everything is there now
                        shutil.rmtree(root)
                    medians[name] = statistics.median(times)
                print(model)
                for name, seconds in medians.items():
                    print(f"  {name:<36} {seconds:7.3f} s  {args.images / seconds:7.1f} images/s")
                for name, seconds in medians.items():
                    if name != ours_name:
                        print(f"  ratio {name} / ours: {seconds / medians[ours_name]:.2f}x")
    finally:
        parent_end.send("stop")
        child.join(5)
    print(f"resume over a complete folder: {statistics.median(resume):.3f} s "
          f"(no request sent)")

if __name__ == "__main__":
    main()
