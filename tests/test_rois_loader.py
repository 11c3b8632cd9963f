"""The extract-rois data path: JPEG headers, which files go to the device decoder, the
per-image fallback to Pillow, and part files written on a thread. The device decoder runs
here on the CPU (torchvision's decode_jpeg); on a GPU the same code calls nvJPEG."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mrhp_prep.errors import InputError
from mrhp_prep.vision.resize import resize_scale
from mrhp_prep.vision.images import ImageDataset, ImageSettings
from mrhp_prep.vision.loader import (DeviceDecoder, ImageSource, gpu_decodable, iter_samples,
                                     read_jpeg_header, resolve_decoder)
from mrhp_prep.vision.parts import list_parts
from mrhp_prep.vision.store import ImageRegions, RoiStore
from mrhp_prep.vision.store_write import write_store
from mrhp_prep.vision.writer import PartWriter
from rois_support import opencv_resize_tolerance, photo, write_photos

SETTINGS = ImageSettings()
CPU = torch.device("cpu")


def _save(path: Path, array: np.ndarray, **options) -> Path:
    Image.fromarray(array).save(path, **options)
    return path


@pytest.fixture()
def odd_files(tmp_path) -> dict[str, Path]:
    """Real photographs saved in the forms crawled product pictures come in."""
    rgb = photo("coffee")
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6                       # "rotate 90 CW to view"
    files = {
        "baseline": _save(tmp_path / "baseline.jpg", rgb, quality=90),
        "progressive": _save(tmp_path / "progressive.jpg", rgb, quality=90, progressive=True),
        "gray": _save(tmp_path / "gray.jpg", photo("camera"), quality=90),
        "png": _save(tmp_path / "png.jpg", rgb, format="PNG"),
        "rotated": tmp_path / "rotated.jpg",
        "cmyk": tmp_path / "cmyk.jpg",
    }
    rotated.save(files["rotated"], quality=90, exif=exif)
    Image.fromarray(rgb).convert("CMYK").save(files["cmyk"], quality=90)
    return files


def test_header_agrees_with_pillow(odd_files):
    for name, path in odd_files.items():
        header = read_jpeg_header(path.read_bytes())
        if name == "png":
            assert header is None
            continue
        with Image.open(path) as image:
            assert (header.width, header.height) == image.size, name
            assert header.components == len(image.getbands()), name
            assert (header.frame == 0xC2) == bool(image.info.get("progressive")), name
            assert header.orientation == image.getexif().get(0x0112, 1), name
            assert header.adobe == ("adobe" in image.info), name


def test_only_plain_upright_jpegs_go_to_the_device(odd_files):
    routed = {name: gpu_decodable(read_jpeg_header(path.read_bytes()), min_side=10,
                                  max_pixels=10**9) for name, path in odd_files.items()}
    assert routed == {"baseline": True, "progressive": True, "gray": True, "png": False,
                      "rotated": False, "cmyk": False}
    plain = read_jpeg_header(odd_files["baseline"].read_bytes())
    # Files Pillow refuses by size go to Pillow, which names the reason.
    assert not gpu_decodable(plain, min_side=plain.height + 1, max_pixels=10**9)
    assert not gpu_decodable(plain, min_side=1, max_pixels=plain.height * plain.width - 1)
    data = odd_files["baseline"].read_bytes()
    assert read_jpeg_header(data[:40]) is None          # cut inside the header
    cut = read_jpeg_header(data[: len(data) // 2])      # a download cut short
    assert cut.complete is False and (cut.width, cut.height) == (plain.width, plain.height)
    assert not gpu_decodable(cut, min_side=10, max_pixels=10**9)
    assert read_jpeg_header(b"<html>not found</html>") is None


def test_device_decoded_images_equal_the_worker_decoded_ones(odd_files):
    """Same pixels, scale and size as the Pillow path (the CPU decode_jpeg and Pillow use
    the same libjpeg conventions), and OpenCV's resize of those pixels."""
    items = [(name, odd_files[name]) for name in ("baseline", "progressive", "gray")]
    reference = ImageDataset(items, min_size=96, max_size=160, image_settings=SETTINGS)
    source = ImageSource(items, min_size=96, max_size=160, image_settings=SETTINGS,
                         decoder="gpu")
    decoder = DeviceDecoder(CPU, min_size=96, max_size=160, image_settings=SETTINGS)
    encoded = [source[i] for i in range(len(items))]
    assert all("jpeg" in sample for sample in encoded)
    for index, sample in enumerate(decoder.decode_batch(encoded)):
        expected = reference[index]
        height, width = expected["original_size"]
        scale = resize_scale(height, width, 96, 160)
        assert sample["original_size"] == (height, width)
        assert sample["scale"] == scale
        torch.testing.assert_close(sample["image"], expected["image"], rtol=0, atol=0)
        with Image.open(items[index][1]) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        opencv = cv2.resize(pixels, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        ours = sample["image"].permute(1, 2, 0).numpy()
        assert ours.shape == opencv.shape
        assert np.abs(ours - opencv).max() <= opencv_resize_tolerance(height, width)
    assert decoder.fallbacks == 0


def test_a_file_the_device_cannot_decode_falls_back_alone(odd_files, tmp_path):
    data = odd_files["baseline"].read_bytes()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(data[: len(data) // 3])           # header intact, scan cut short
    items = [("good", odd_files["baseline"]), ("broken", broken), ("gray", odd_files["gray"])]
    # As the workers would send them, had the header check let the cut file through.
    encoded = [{"image_id": image_id, "path": str(path),
                "jpeg": torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)}
               for image_id, path in items]
    decoder = DeviceDecoder(CPU, min_size=96, max_size=160, image_settings=SETTINGS)
    out = decoder.decode_batch(encoded)
    assert [s["image_id"] for s in out] == ["good", "broken", "gray"]
    assert decoder.fallbacks == 1
    # Pillow's verdict on the cut file stands: a failure with its reason, or its pixels.
    pillow = ImageDataset([("broken", broken)], min_size=96, max_size=160,
                          image_settings=SETTINGS)[0]
    if pillow["image"] is None:
        assert out[1]["image"] is None and out[1]["reason"] == pillow["reason"]
    else:
        torch.testing.assert_close(out[1]["image"], pillow["image"], rtol=0, atol=0)
    assert out[0]["image"] is not None and out[2]["image"] is not None


def test_every_item_comes_out_once_with_either_decoder(odd_files, tmp_path):
    items = sorted(odd_files.items()) + [("missing", tmp_path / "nope.jpg")]
    seen = {}
    for decoder in ("cpu", "gpu"):
        samples = list(iter_samples(items, min_size=96, max_size=160, image_settings=SETTINGS,
                                    decoder=decoder, device=CPU, workers=0, chunk_size=3))
        assert sorted(s["image_id"] for s in samples) == sorted(i for i, _ in items)
        seen[decoder] = {s["image_id"]: s for s in samples}
    assert seen["gpu"]["missing"]["reason"] == "missing"
    for image_id, sample in seen["cpu"].items():
        other = seen["gpu"][image_id]
        if sample["image"] is None:
            assert other["image"] is None
        else:
            torch.testing.assert_close(other["image"], sample["image"], rtol=0, atol=0)


def test_decoder_choice():
    assert resolve_decoder("auto", CPU) == "cpu"
    assert resolve_decoder("auto", torch.device("cuda")) == "gpu"
    with pytest.raises(InputError, match="CUDA"):
        resolve_decoder("gpu", CPU)


# --- the part writer ------------------------------------------------------------------------

def _regions(image_id: str, count: int, seed: int) -> ImageRegions:
    rng = np.random.default_rng(seed)
    return ImageRegions(image_id=image_id, image_h=50, image_w=60,
                        features=rng.random((count, 8), dtype=np.float32).astype(np.float16),
                        boxes=rng.random((count, 4), dtype=np.float32),
                        object_id=rng.integers(0, 9, count).astype(np.int32),
                        object_conf=rng.random(count, dtype=np.float32),
                        attr_id=rng.integers(0, 9, count).astype(np.int32),
                        attr_conf=rng.random(count, dtype=np.float32))


def test_writer_thread_writes_what_inline_writing_does(tmp_path):
    parts = [[_regions(f"img{p}-{k}", 3 + k, 10 * p + k) for k in range(4)] for p in range(5)]
    failures = [[{"item": f"bad{p}", "reason": "missing", "detail": "", "path": "x"}]
                for p in range(5)]
    threaded, inline = tmp_path / "threaded", tmp_path / "inline"
    for folder in (threaded, inline):
        (folder / "parts").mkdir(parents=True)
    with PartWriter(threaded, feature_dim=8, feature_dtype=np.float16, attrs={"part": True},
                    max_pending=1) as writer:
        for regions, bad in zip(parts, failures):
            writer.write(regions, bad)
    for number, (regions, bad) in enumerate(zip(parts, failures)):
        write_store(inline / "parts" / f"part-{number:05d}.h5", regions, feature_dim=8,
                    feature_dtype=np.float16, attrs={"part": True}, failures=bad)
    assert [p.name for p in list_parts(threaded)] == [p.name for p in list_parts(inline)]
    for mine, theirs in zip(list_parts(threaded), list_parts(inline)):
        with RoiStore(mine) as a, RoiStore(theirs) as b:
            assert a.image_ids == b.image_ids
            assert a.failures() == b.failures()
            for image_id in a.image_ids:
                for key in ("features", "boxes", "object_id", "attr_conf"):
                    np.testing.assert_array_equal(np.asarray(a.image(image_id)[key]),
                                                  np.asarray(b.image(image_id)[key]))


def test_writer_error_reaches_the_caller(tmp_path):
    (tmp_path / "parts").write_text("a file where the parts folder should be")
    writer = PartWriter(tmp_path, feature_dim=8, feature_dtype=np.float16, attrs={})
    writer.write([_regions("a", 2, 0)], [])
    with pytest.raises(OSError):
        writer.close()


def test_extract_rois_refuses_gpu_decoding_without_a_gpu(runner, tmp_path):
    from mrhp_prep.cli import cli

    write_photos(tmp_path / "images", names=("coffee",))
    result = runner.invoke(cli, ["extract-rois", "--images", str(tmp_path / "images"),
                                 "--weights", "random", "--device", "cpu", "--decode", "gpu",
                                 "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 3, result.output
    assert "--decode" in result.output + (result.stderr or "")
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_the_stage_loop_stores_the_same_regions_with_device_decoding(tmp_path, odd_files):
    """The stage's own loop (workers, device decoder, shape batches, the detector, the part
    writer) with decoder "gpu" run on the CPU: the regions equal the Pillow path's, and the
    files the device path hands to Pillow (PNG, CMYK, rotated) are stored too."""
    from mrhp_prep.vision.extract import RunOptions, _extract_parts
    from mrhp_prep.vision.models import DetectorSettings

    todo = sorted(odd_files.items())
    detector = DetectorSettings(weights="random", min_size=48, max_size=64,
                                rpn_post_nms_top_n=4, min_boxes=2, max_boxes=4)
    for decoder in ("cpu", "gpu"):
        folder = tmp_path / decoder
        folder.mkdir()
        _extract_parts(todo, folder, detector, SETTINGS, np.float16, "fp32", CPU,
                       RunOptions(batch_size=2, workers=1, part_size=2), "random:0", {},
                       False, decoder)
    stores = {}
    for decoder in ("cpu", "gpu"):
        regions = {}
        for part in list_parts(tmp_path / decoder):
            with RoiStore(part) as store:
                for image_id in store.image_ids:
                    regions[image_id] = {k: np.asarray(v) for k, v in
                                         store.image(image_id).items()
                                         if k in ("features", "boxes", "object_id")}
        stores[decoder] = regions
    assert sorted(stores["gpu"]) == sorted(name for name, _ in todo)
    for image_id, expected in stores["cpu"].items():
        for key, value in expected.items():
            np.testing.assert_array_equal(stores["gpu"][image_id][key], value,
                                          err_msg=f"{image_id} {key}")
