"""show-rois and the class names: regions drawn where the store puts them, labelled with the
Visual Genome names that its 0-based ids index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mrhp_prep.cli import cli
from mrhp_prep.data.manifest import Manifest
from mrhp_prep.data.sample import SAMPLE_IMAGES
from mrhp_prep.errors import InputError
from mrhp_prep.views.class_names import (ATTRIBUTES_FILE, OBJECTS_FILE, ClassNames,
                                         names_for_store, visual_genome)
from mrhp_prep.views.draw import PALETTE
from mrhp_prep.vision.store import RoiStore
from views_support import ATTR_ID, BY_CONFIDENCE, OBJECT_CONF, OBJECT_ID, write_view_store

IMAGE = "B00SAMP007/pic_0.jpg"


def raw_lines(path: Path) -> list[str]:
    """The vocabulary file's lines, read without the package's reader."""
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


@pytest.fixture(scope="module")
def store(sample_manifest, tmp_path_factory) -> Path:
    return write_view_store(tmp_path_factory.mktemp("rois") / "store", sample_manifest,
                            SAMPLE_IMAGES)


# --------------------------------------------------------------------------- class names


def test_vocabularies_have_one_line_per_class_of_the_detector_heads():
    # 1,601 object logits and 401 attribute logits, background / "no attribute" first
    assert len(raw_lines(OBJECTS_FILE)) == 1600
    assert len(raw_lines(ATTRIBUTES_FILE)) == 400
    objects, attributes = visual_genome()
    assert (len(objects), len(attributes)) == (1600, 400)
    # a line of synonyms shows its first
    synonyms = [i for i, line in enumerate(raw_lines(OBJECTS_FILE)) if "," in line]
    assert synonyms and all(objects[i] == raw_lines(OBJECTS_FILE)[i].split(",")[0]
                            for i in synonyms)
    assert attributes[0] == "gray"                   # the file's first line is "gray,grey"


def test_stored_ids_name_the_detector_class_one_past_them():
    """The vocabulary's rule: line k names head output k + 1 (output 0 is background / no
    attribute). The real post-processing stores the arg-max over outputs 1.. counted from 0,
    so the stored id is the line."""
    import torch

    from mrhp_prep.vision.postprocess import regions_to_store

    objects_raw, attributes_raw = raw_lines(OBJECTS_FILE), raw_lines(ATTRIBUTES_FILE)
    for object_output, attr_output in ((17, 1), (1, 400), (1600, 5)):
        class_probs = torch.full((1, 1601), 1e-4)
        class_probs[0, object_output] = 0.9
        attr_probs = torch.full((1, 401), 1e-4)
        attr_probs[0, attr_output] = 0.8
        stored = regions_to_store(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor(1.0),
                                  class_probs, attr_probs, torch.zeros(1, 4), nms_thresh=0.3,
                                  conf_thresh=0.2, min_boxes=1, max_boxes=1)
        names = names_for_store({"model": "butd-r101", "weights_sha256": "ab" * 32}, 2)
        label = names.label(int(stored["object_id"][0]), int(stored["attr_id"][0]),
                            float(stored["object_conf"][0]))
        expected_object = objects_raw[object_output - 1].split(",")[0]
        expected_attr = attributes_raw[attr_output - 1].split(",")[0]
        assert label == f"{expected_attr} {expected_object} 0.90"


@pytest.mark.parametrize("attrs, version, naming, source", [
    ({"model": "butd-r101", "weights_sha256": "ab" * 32}, 2, "auto", "visual-genome"),
    ({"model": "butd-r101", "weights_sha256": "random:0"}, 2, "auto", "ids"),
    ({"model": "butd-r101", "weights_sha256": "ab" * 32}, 1, "auto", "ids"),
    ({"model": "imported:npz", "weights_sha256": ""}, 2, "auto", "ids"),
    ({"model": "imported:npz", "weights_sha256": ""}, 2, "visual-genome", "visual-genome"),
    ({"model": "butd-r101", "weights_sha256": "ab" * 32}, 2, "ids", "ids"),
    ({"model": "fixture"}, 2, "auto", "ids"),
])
def test_which_names_a_store_gets(attrs, version, naming, source):
    names = names_for_store(attrs, version, naming)
    assert names.source == source and names.reason


def test_labels_without_names_show_the_ids():
    names = ClassNames("ids", "test")
    assert names.label(12, 3, 0.871) == "obj 12 attr 3 0.87"
    assert names.label(12, -1, 0.5) == "obj 12 0.50"          # no attribute head


def test_unknown_naming_is_refused():
    with pytest.raises(InputError, match="--names"):
        names_for_store({}, 2, "wordnet")


# --------------------------------------------------------------------------- drawing


def _edge_hits(pixels: np.ndarray, box: np.ndarray, colour, window: int = 2) -> float:
    """Share of points along the box's four edges (corners left out) with `colour` within
    `window` pixels across the edge."""
    x1, y1, x2, y2 = box
    height, width = pixels.shape[:2]
    hits = total = 0
    for t in np.linspace(0.15, 0.85, 40):
        x, y = x1 + t * (x2 - x1), y1 + t * (y2 - y1)
        for px, py, horizontal in ((x, y1, True), (x, y2, True), (x1, y, False), (x2, y, False)):
            found = False
            for d in range(-window, window + 1):
                cx = round(px) + (0 if horizontal else d)
                cy = round(py) + (d if horizontal else 0)
                if 0 <= cx < width and 0 <= cy < height and tuple(pixels[cy, cx]) == colour:
                    found = True
                    break
            hits += found
            total += 1
    return hits / total


def test_png_has_the_top_boxes_where_the_store_says(store, tmp_path, runner):
    out = tmp_path / "pic.png"
    result = runner.invoke(cli, ["show-rois", "--rois", str(store), "--image-id", IMAGE,
                                 "--top", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert "visual-genome" in result.stderr
    drawn = np.asarray(Image.open(out).convert("RGB"))
    with RoiStore(store) as roi_store:
        regions = roi_store.image(IMAGE)
    scale = drawn.shape[1] / regions["image_w"]
    assert drawn.shape[0] == pytest.approx(regions["image_h"] * scale, abs=1)
    for rank, stored_row in enumerate(BY_CONFIDENCE[:3]):        # drawn: the 3 most confident
        box = regions["boxes"][stored_row] * scale
        assert _edge_hits(drawn, box, PALETTE[rank]) > 0.8, (rank, stored_row)
        # its label sits on a patch of the same colour just above the box's left corner
        x1, y1 = int(box[0]), int(box[1])
        patch = drawn[y1 - 12:y1 - 1, x1 + 1:x1 + 40]
        assert (patch == PALETTE[rank]).all(axis=2).mean() > 0.4
    left_out = regions["boxes"][BY_CONFIDENCE[3]] * scale     # the 4th is not drawn at all
    assert _edge_hits(drawn, left_out, PALETTE[3]) < 0.05
    assert not (drawn == PALETTE[3]).all(axis=2).any()


def test_labels_name_the_stored_ids(store):
    from mrhp_prep.views.regions import top_regions

    objects, attributes = raw_lines(OBJECTS_FILE), raw_lines(ATTRIBUTES_FILE)
    with RoiStore(store) as roi_store:
        names = names_for_store(roi_store.attrs, roi_store.format_version)
        regions = top_regions(roi_store, names, IMAGE, 4)
    expected = [f"{attributes[ATTR_ID[i]].split(',')[0]} {objects[OBJECT_ID[i]].split(',')[0]} "
                f"{OBJECT_CONF[i]:.2f}" for i in BY_CONFIDENCE]
    assert regions.labels == expected
    assert expected[0] == "gray yolk 0.90"


def test_product_and_review_photos_come_from_the_recorded_manifest(store, tmp_path, runner,
                                                                   sample_manifest):
    # no --manifest and no --images-root: the store recorded both
    result = runner.invoke(cli, ["show-rois", "--rois", str(store / "rois.h5"), "--product",
                                 "B00SAMP007", "--review", "B00SAMP007-0", "--out",
                                 str(tmp_path / "views")])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "views").iterdir())
    assert written == ["B00SAMP007-0_pic_0-rois.png", "B00SAMP007_pic_0-rois.png"]
    images = Manifest(sample_manifest).images
    assert set(images.loc[images["item_id"].isin(["B00SAMP007", "B00SAMP007-0"]), "image_id"]) \
        == {"B00SAMP007/pic_0.jpg", "B00SAMP007-0/pic_0.jpg"}


def test_random_weights_show_ids(sample_manifest, tmp_path):
    from mrhp_prep.views.show_rois import show_rois

    store = write_view_store(tmp_path / "random", sample_manifest, SAMPLE_IMAGES,
                             weights="random:0")
    result = show_rois(store, image_ids=[IMAGE], out=tmp_path / "one.png")
    assert result.names.source == "ids" and "random" in result.names.reason
    assert result.written == [tmp_path / "one.png"]


def test_image_not_in_the_store_is_a_clear_error(store, runner):
    result = runner.invoke(cli, ["show-rois", "--rois", str(store), "--image-id",
                                 "B00NOPE/pic_0.jpg"])
    assert result.exit_code == 3
    assert "B00NOPE/pic_0.jpg" in result.output and "rois.h5" in result.output
    assert "What to do" in result.output and "Traceback" not in result.output


def test_missing_image_file_is_a_clear_error_and_others_are_still_drawn(sample_manifest,
                                                                        tmp_path, runner):
    import shutil

    root = tmp_path / "images"
    shutil.copytree(SAMPLE_IMAGES, root)
    store = write_view_store(tmp_path / "store", sample_manifest, root)
    (root / "test/rvw/B00SAMP007-0/pic_0.jpg").unlink()
    alone = runner.invoke(cli, ["show-rois", "--rois", str(store), "--image-id",
                                "B00SAMP007-0/pic_0.jpg", "--out", str(tmp_path / "a.png")])
    assert alone.exit_code == 3 and "missing" in alone.output
    assert "test/rvw/B00SAMP007-0/pic_0.jpg" in alone.output and "--images-root" in alone.output
    both = runner.invoke(cli, ["show-rois", "--rois", str(store), "--product", "B00SAMP007",
                               "--review", "B00SAMP007-0", "--out", str(tmp_path / "both")])
    assert both.exit_code == 0, both.output
    assert [p.name for p in (tmp_path / "both").iterdir()] == ["B00SAMP007_pic_0-rois.png"]
    assert "not drawn: B00SAMP007-0/pic_0.jpg" in both.stderr


def test_a_changed_image_file_is_refused(sample_manifest, tmp_path, runner):
    import shutil

    root = tmp_path / "images"
    shutil.copytree(SAMPLE_IMAGES, root)
    store = write_view_store(tmp_path / "store", sample_manifest, root)
    path = root / "test/prd/B00SAMP007/pic_0.jpg"
    Image.open(path).resize((50, 40)).save(path)
    result = runner.invoke(cli, ["show-rois", "--rois", str(store), "--image-id", IMAGE])
    assert result.exit_code == 3 and "50x40" in result.output and "changed" in result.output


def test_unknown_product_is_a_clear_error(store, runner):
    result = runner.invoke(cli, ["show-rois", "--rois", str(store), "--product", "B00NONE"])
    assert result.exit_code == 3 and "B00NONE" in result.output
    assert "products.parquet" in result.output


def test_no_image_chosen_is_a_usage_error(store, runner):
    result = runner.invoke(cli, ["show-rois", "--rois", str(store)])
    assert result.exit_code == 2 and "--image-id" in result.output
