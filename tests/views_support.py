"""Inputs of the view tests: RoI stores with known regions on real photographs, and a small
finished training run whose test split has enough products to rank.

The RoI stores are written through the store's own writer (`vision.store_write.write_store`)
into an extract-rois stage folder that records its manifest and images root, as extract-rois
does; their regions are chosen by the test (the detector's own output is exercised by the
slow test on the sample pipeline).
"""

from __future__ import annotations

import html.parser
from pathlib import Path

import numpy as np
from PIL import Image

from mrhp_prep.cache import open_stage
from mrhp_prep.data.manifest import Manifest
from mrhp_prep.vision.decode import decode_image
from mrhp_prep.vision.store import FORMAT_VERSION, STORE_NAME, ImageRegions
from mrhp_prep.vision.store_write import write_store
from rois_support import PHOTOS, photo

# Every image gets these four regions, as fractions of its width and height, stored in this
# order; by confidence the order is 0, 2, 3, 1.
BOX_FRACTIONS = np.array([[0.05, 0.08, 0.45, 0.45], [0.55, 0.10, 0.95, 0.50],
                          [0.10, 0.55, 0.50, 0.92], [0.55, 0.58, 0.90, 0.90]])
OBJECT_CONF = np.array([0.90, 0.30, 0.70, 0.50], dtype=np.float32)
OBJECT_ID = np.array([0, 1599, 5, 17], dtype=np.int32)
ATTR_ID = np.array([0, 399, 1, 4], dtype=np.int32)
ATTR_CONF = np.array([0.6, 0.2, 0.4, 0.3], dtype=np.float32)
BY_CONFIDENCE = [0, 2, 3, 1]
CHECKPOINT_IDENTITY = "5e" * 32          # a made-up checkpoint sha256: names are shown


def image_regions(image_id: str, height: int, width: int, dim: int = 16) -> ImageRegions:
    boxes = (BOX_FRACTIONS * [width, height, width, height]).astype(np.float32)
    seed = sum(image_id.encode())
    features = np.random.default_rng(seed).normal(size=(len(boxes), dim)).astype(np.float16)
    return ImageRegions(image_id, height, width, features, boxes, OBJECT_ID.copy(),
                        OBJECT_CONF.copy(), ATTR_ID.copy(), ATTR_CONF.copy())


def write_view_store(folder: Path, manifest_dir: Path, images_root: Path, *,
                     weights: str = CHECKPOINT_IDENTITY, model: str = "butd-r101",
                     skip: tuple[str, ...] = ()) -> Path:
    """A finished extract-rois folder with BOX_FRACTIONS regions on every manifest image
    (but `skip`), recording its manifest and images root."""
    manifest = Manifest(manifest_dir)
    settings = {"model": model, "weights": weights, "fixture": "views", "skip": list(skip)}
    run = open_stage("extract-rois", dataset=manifest.name, settings=settings,
                     inputs={"manifest": manifest_dir, "images_root": images_root},
                     format_version=FORMAT_VERSION, out=folder)
    images = []
    for image_id, relative in zip(manifest.images["image_id"], manifest.images["path"]):
        if image_id in skip:
            continue
        height, width = decode_image(images_root / relative).shape[:2]
        images.append(image_regions(image_id, height, width))
    write_store(run.path / STORE_NAME, images, feature_dim=16,
                attrs={"model": model, "weights_sha256": weights, "settings": settings})
    run.finish({"images": len(images), "extracted": len(images)}, model=model,
               weights_sha256=weights, feature_dim=16, store=STORE_NAME)
    return run.path


def write_photos_for(manifest_dir: Path, root: Path, scale: float = 2.0) -> Path:
    """A real photograph (scikit-image's) at every image path of the manifest."""
    manifest = Manifest(manifest_dir)
    names = sorted(PHOTOS)
    for index, relative in enumerate(manifest.images["path"]):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(photo(names[index % len(names)])).convert("RGB")
        image = image.resize((round(image.width * scale), round(image.height * scale)))
        image.save(path, quality=90)
    return root


class Page(html.parser.HTMLParser):
    """What the tests read of a generated page: product sections in order, each review's
    text as a reader sees it with the character spans of its <mark>s, image sources, links
    and whether there is a script."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.products: list[str] = []
        self.reviews: dict[str, list[str]] = {}       # product id -> review ids in order
        self.review_text: dict[str, str] = {}
        self.marks: dict[str, list[tuple[int, int]]] = {}
        self.sources: list[str] = []
        self.links: list[str] = []
        self.scripts = 0
        self._product = None
        self._review = None
        self._in_text = 0
        self._mark_start = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if "src" in attrs:
            self.sources.append(attrs["src"])
        if "href" in attrs:
            self.links.append(attrs["href"])
        if tag == "section" and "data-product-id" in attrs:
            self._product = attrs["data-product-id"]
            self.products.append(self._product)
            self.reviews[self._product] = []
        if tag == "div" and "data-review-id" in attrs:
            self._review = attrs["data-review-id"]
            self.reviews.setdefault(self._product, []).append(self._review)
            self.review_text[self._review] = ""
            self.marks[self._review] = []
        if tag == "div" and attrs.get("class") == "text" and self._review:
            self._in_text = 1
        elif tag == "div" and self._in_text:
            self._in_text += 1
        if tag == "mark" and self._in_text:
            self._mark_start = len(self.review_text[self._review])

    def handle_endtag(self, tag):
        if tag == "mark" and self._mark_start is not None:
            self.marks[self._review].append((self._mark_start,
                                             len(self.review_text[self._review])))
            self._mark_start = None
        if tag == "div" and self._in_text:
            self._in_text -= 1

    def handle_data(self, data):
        if self._in_text:
            self.review_text[self._review] += data


# Probe masks written out by hand for two test reviews of the planted release: (start, end,
# marked) character offsets into the review's text.
HAND_MASKS = {"PTE000-0": [(0, 10, True), (10, 21, False), (21, 30, True)],
              "PTE001-3": [(4, 17, True)]}


def make_planted_run(root: Path) -> dict[str, Path]:
    """A finished SANCL run (one epoch, tiny) on a planted release with 12 test products:
    real photographs, a RoI store with BOX_FRACTIONS regions, static text vectors and probe
    masks (HAND_MASKS for two reviews). Returns {manifest, images, rois, text, probes, run}."""
    from feature_stores import planted_release, write_probe_store, write_text_store
    from mrhp_prep.data.ingest import ingest
    from mrhp_prep.train.run import train

    raw = planted_release(root / "raw", products_per_split=(6, 2, 12), reviews_per_product=6,
                          seed=5)
    manifest = ingest(raw, dataset="amazon", category="home", labels="raw", name="planted",
                      cache_dir=root / "cache").path
    images = write_photos_for(manifest, root / "images")
    rois = write_view_store(root / "rois", manifest, images)
    text = write_text_store(root / "text", manifest, dim=8)
    probes = write_probe_store(root / "probes", manifest, spans=HAND_MASKS)
    result = train(manifest=manifest, rois=rois, text=text, probes=probes, model="sancl",
                   overrides=["train.epochs=1", "model.text_hidden=8", "model.image_hidden=8",
                              "model.shared_hidden=8"],
                   out=root / "run", num_workers=0, show_progress=False, device="cpu")
    return {"manifest": manifest, "images": images, "rois": rois, "text": text,
            "probes": probes, "run": result.path}
