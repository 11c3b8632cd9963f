"""import-rois then export-rois gives back the reference tools' own arrays, unchanged:
ids (0-based), region order, boxes, features, in their formats' types."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from mrhp_prep.cli import cli

# Image id -> regions; ids reach both ends of the vocabularies, boxes pass the image edge.
IMAGES = {"train/prd/B00A/pic_0": (300, 400, 5), "train/rvw/B00A-3/pic_1": (120, 90, 10),
          "test/prd/B00B/pic_0": (640, 480, 1)}


def _regions(seed: int, height: int, width: int, n: int) -> dict:
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(-0.4, width * 0.6, n)
    y1 = rng.uniform(0, height * 0.6, n)
    boxes = np.stack([x1, y1, x1 + rng.uniform(8, width * 0.5, n),
                      y1 + rng.uniform(8, height * 0.5, n)], axis=1).astype(np.float32)
    boxes[0, 2] = width - 1 + 0.37          # unclipped, as the reference stores them
    objects = rng.integers(0, 1600, n)
    objects[0] = 0
    attrs = rng.integers(0, 400, n)
    attrs[-1] = 399
    return {"x": rng.standard_normal((n, 2048)).astype(np.float32), "bbox": boxes,
            "objects_id": objects.astype(np.int64),
            "objects_conf": rng.uniform(0.2, 1, n).astype(np.float32),
            "attrs_id": attrs.astype(np.int64),
            "attrs_conf": rng.uniform(0, 1, n).astype(np.float32)}


def _ok(result) -> Path:
    assert result.exit_code == 0, result.output
    return Path(result.stdout.strip().splitlines()[-1])


def test_reference_npz_folder_round_trips(tmp_path, runner):
    source = tmp_path / "features"
    written = {}
    for seed, (name, (height, width, n)) in enumerate(IMAGES.items()):
        regions = _regions(seed, height, width, n)
        path = source / f"{name}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        info = {"image_id": Path(name).name, "image_h": height, "image_w": width,
                "objects_id": regions["objects_id"], "objects_conf": regions["objects_conf"],
                "attrs_id": regions["attrs_id"], "attrs_conf": regions["attrs_conf"]}
        # What the reference's save_roi_features writes.
        np.savez_compressed(path, x=regions["x"], bbox=regions["bbox"], num_bbox=n,
                            image_h=height, image_w=width, info=info)
        written[name] = regions
    store = _ok(runner.invoke(cli, ["import-rois", str(source), "--format", "npz", "--out",
                                    str(tmp_path / "store")]))      # the defaults
    out = tmp_path / "exported"
    assert runner.invoke(cli, ["export-rois", str(store), "--format", "npz", "--out",
                               str(out)]).exit_code == 0
    for name, regions in written.items():
        height, width, n = IMAGES[name]
        with np.load(out / f"{name}.npz", allow_pickle=False) as back:
            for key, value in regions.items():
                assert back[key].dtype == value.dtype, key
                np.testing.assert_array_equal(back[key], value, key)
            assert (int(back["num_bbox"]), int(back["image_h"]), int(back["image_w"])) == \
                (n, height, width)
            assert back["num_bbox"].dtype == np.int64


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(array.tobytes()).decode("ascii")


def test_butd_tsv_round_trips_line_for_line(tmp_path, runner):
    # The ten-column layout of the detectron2 port / LXMERT: ids int64 (0-based), the rest
    # float32, arrays base64, height before width.
    lines = []
    for seed, (name, (height, width, n)) in enumerate(IMAGES.items()):
        r = _regions(seed, height, width, n)
        lines.append("\t".join([
            name, str(height), str(width), _b64(r["objects_id"]), _b64(r["objects_conf"]),
            _b64(r["attrs_id"]), _b64(r["attrs_conf"]), str(n), _b64(r["bbox"]), _b64(r["x"])]))
    source = tmp_path / "vg.tsv"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    store = _ok(runner.invoke(cli, ["import-rois", str(source), "--format", "tsv", "--out",
                                    str(tmp_path / "store")]))
    out = tmp_path / "exported"
    assert runner.invoke(cli, ["export-rois", str(store), "--format", "tsv", "--out",
                               str(out)]).exit_code == 0
    assert (out / "rois.tsv").read_text(encoding="utf-8") == source.read_text(encoding="utf-8")


def test_format_1_stores_are_not_exported(tmp_path):
    # Format 1 counted extract-rois ids from 1: exporting them as 0-based would be wrong.
    import h5py
    import pytest

    from mrhp_prep.errors import InputError
    from mrhp_prep.vision.stages import export_rois
    from mrhp_prep.vision.store import FORMAT_VERSION, ImageRegions
    from mrhp_prep.vision.store_write import write_store

    regions = _regions(0, 100, 100, 3)
    image = ImageRegions("a.jpg", 100, 100, regions["x"], regions["bbox"],
                         regions["objects_id"], regions["objects_conf"], regions["attrs_id"],
                         regions["attrs_conf"])
    path = write_store(tmp_path / "rois.h5", [image], feature_dim=2048)
    assert FORMAT_VERSION == 2
    assert export_rois(str(path), fmt="npz", out=str(tmp_path / "ok")) == 1
    with h5py.File(path, "r+") as handle:
        handle.attrs["format_version"] = 1
    with pytest.raises(InputError, match="counted from 1"):
        export_rois(str(path), fmt="tsv", out=str(tmp_path / "refused"))


def test_ids_that_would_share_a_file_or_break_a_line_are_refused_before_writing(tmp_path):
    import pytest

    from mrhp_prep.errors import InputError
    from mrhp_prep.vision.stages import export_rois
    from mrhp_prep.vision.store import ImageRegions
    from mrhp_prep.vision.store_write import write_store

    def store(path, ids):
        regions = _regions(0, 100, 100, 2)
        return write_store(path, [ImageRegions(i, 100, 100, regions["x"], regions["bbox"],
                                               regions["objects_id"], regions["objects_conf"],
                                               regions["attrs_id"], regions["attrs_conf"])
                                  for i in ids], feature_dim=2048)
    # x.jpg and x.png would both become x.npz: the second would replace the first.
    two = store(tmp_path / "two.h5", ["shop/x.jpg", "shop/x.png", "shop/y.jpg"])
    with pytest.raises(InputError, match=r"'shop/x.jpg' and 'shop/x.png'.*x\.npz"):
        export_rois(str(two), fmt="npz", out=str(tmp_path / "npz"))
    assert not list((tmp_path / "npz").rglob("*.npz"))
    tab = store(tmp_path / "tab.h5", ["ok.jpg", "a\tb.jpg"])
    with pytest.raises(InputError, match="tab or newline"):
        export_rois(str(tab), fmt="tsv", out=str(tmp_path / "tsv"))
    assert not (tmp_path / "tsv" / "rois.tsv").exists()


def test_format_1_shards_are_not_merged(sample_manifest, tmp_path):
    import pytest

    from feature_stores import write_roi_store
    from mrhp_prep.errors import InputError
    from mrhp_prep.vision.stages import merge_rois

    old = write_roi_store(tmp_path / "old", sample_manifest)     # an extract-rois folder, format 1
    with pytest.raises(InputError, match="store format 1"):
        merge_rois([str(old)], cache_dir=str(tmp_path / "cache"))
