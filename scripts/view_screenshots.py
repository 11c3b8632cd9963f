"""Make the README's pictures of the views (docs/img/view-*.png) from the bundled sample.

    mrhp-prep run pipelines/sample.yaml --cache-dir /tmp/sample-cache
    python scripts/view_screenshots.py /tmp/sample-cache/sample

Runs show-rois, show-probes and report on the sample pipeline's outputs, opens the pages in
headless Chromium (tests/headless_chromium.py) and writes PNGs under 300 KB to
docs/img/.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from headless_chromium import Browser  # noqa: E402


def stage(cache: Path, name: str) -> Path:
    found = [p for p in (cache / name).iterdir() if (p / "MANIFEST.json").is_file()]
    if len(found) != 1:
        raise SystemExit(f"expected one finished {name} folder under {cache}, found {found}")
    return found[0]


def mrhp(*args: str) -> str:
    script = Path(sys.executable).with_name("mrhp-prep")
    done = subprocess.run([str(script), "-q", *args], capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise SystemExit(done.stderr)
    return done.stdout.strip().splitlines()[-1]


def save_small(png: bytes, path: Path, crop_height: int | None = None) -> None:
    image = Image.open(io.BytesIO(png)).convert("RGB")
    if crop_height:
        image = image.crop((0, 0, image.width, min(crop_height, image.height)))
    image.save(path, optimize=True)
    if path.stat().st_size > 280_000:          # keep the repository light: a palette instead
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path}: {image.width}x{image.height}, {path.stat().st_size / 1024:.0f} KB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cache", type=Path, help="the sample's folder in the cache "
                                                 "(CACHE_DIR/sample)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        drawn = mrhp("show-rois", "--rois", str(stage(args.cache, "extract-rois")),
                     "--image-id", "B00SAMP008/pic_0.jpg", "--top", "5",
                     "--out", str(scratch / "rois.png"))
        save_small(Path(drawn).read_bytes(), args.out / "view-show-rois.png")
        probes = mrhp("show-probes", "--probes", str(stage(args.cache, "probe-masks")),
                      "--split", "test", "--out", str(scratch / "probes.html"))
        report = mrhp("report", str(stage(args.cache, "train")),
                      "--out", str(scratch / "report.html"))
        with Browser.start(scratch / "profile", width=1100, height=1500) as browser:
            browser.visit(Path(probes).as_uri())
            save_small(browser.screenshot(), args.out / "view-show-probes.png", 1000)
            browser.visit(Path(report).as_uri())
            save_small(browser.screenshot("section.product"), args.out / "view-report.png")


if __name__ == "__main__":
    main()
