"""The sample dataset bundled with the package (raw release files plus crawled images)."""

from __future__ import annotations

from pathlib import Path

SAMPLE_ROOT = Path(__file__).resolve().parent / "sample"
SAMPLE_RAW = SAMPLE_ROOT / "raw"
SAMPLE_IMAGES = SAMPLE_ROOT / "images"
