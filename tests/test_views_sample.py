"""The views on the bundled sample's real stage outputs (`mrhp-prep run pipelines/sample.yaml`):
each finds the manifest and images its inputs recorded, through the console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrhp_prep.data.sample import SAMPLE_IMAGES
from views_support import Page

pytestmark = pytest.mark.slow


def _cli(*args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("mrhp-prep")
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=300,
                          check=False)


@pytest.fixture(scope="module")
def stages(sample_pipeline) -> dict[str, Path]:
    assert sample_pipeline["result"].returncode == 0, sample_pipeline["result"].stderr[-3000:]
    return sample_pipeline["stages"]


def test_extract_rois_records_its_manifest_and_images(stages):
    recorded = json.loads((stages["extract-rois"] / "MANIFEST.json").read_text())["input_paths"]
    assert recorded == {"manifest": str(stages["ingest"].resolve()),
                        "images_root": str(SAMPLE_IMAGES.resolve())}


def test_show_rois_draws_the_sample_store(stages, tmp_path):
    result = _cli("show-rois", "--rois", str(stages["extract-rois"]), "--product", "B00SAMP008",
                  "--top", "4", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    drawn = np.asarray(Image.open(tmp_path / "B00SAMP008_pic_0-rois.png").convert("RGB"))
    assert drawn.shape[1] == 480                  # the 320-px photo, enlarged for its labels
    # the sample's detector has random weights: labels are ids, said in the summary
    assert "ids (the detector had random weights (random:0)" in result.stderr
    assert ((drawn == (230, 25, 75)).all(axis=2)).sum() > 200        # the first box's colour


def test_show_probes_and_report_on_the_sample(stages):
    probes = _cli("show-probes", "--probes", str(stages["probe-masks"]))
    assert probes.returncode == 0, probes.stderr
    page = Page(Path(probes.stdout.strip().splitlines()[-1]).read_text())
    assert len(page.products) == 8 and any(page.marks.values())

    report = _cli("report", str(stages["train"]))
    assert report.returncode == 0, report.stderr
    path = Path(report.stdout.strip().splitlines()[-1])
    assert path == stages["train"] / "report.html"
    text = path.read_text()
    page = Page(text)
    assert sorted(page.products) == ["B00SAMP007", "B00SAMP008"]
    assert text.count("data:image/jpeg;base64,") == 6     # 2 product photos, 4 review photos
    assert "obj " in text and "<script" not in text
