"""Feeding photographs to the detector: decoded on CPU workers or on the GPU, then resized.

With `decoder="cpu"` every image is decoded by Pillow in DataLoader worker processes (see
`decode.decode_image`). With `decoder="gpu"` the workers only read the file and look at its
JPEG header: a plain JPEG (baseline or progressive, gray or YCbCr, upright, complete)
travels as bytes and is decoded on the GPU by nvJPEG (`torchvision.io.decode_jpeg(
device="cuda")`), a whole batch per call; every other file (PNG, CMYK, EXIF-rotated,
arithmetic-coded, too small or too large, cut short, damaged) is decoded by Pillow in the
worker as before. A file nvJPEG refuses is
decoded by Pillow in the main process, so one odd file never stops a run.

Either way each image is resized by `images.resize_pixels` on the device its pixels are on
(CPU workers, or the GPU), so both decoders share one resize.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import InputError
from ..choices import require_choice

DECODERS = ("auto", "cpu", "gpu")

# Start-of-frame markers nvJPEG decodes: baseline (C0), extended sequential (C1) and
# progressive (C2) Huffman JPEG. Lossless, hierarchical and arithmetic-coded ones go to Pillow.
_GPU_FRAMES = {0xC0, 0xC1, 0xC2}
_ALL_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_ORIENTATION_TAG = 0x0112


@dataclass
class JpegHeader:
    """What the header of a JPEG file says: size, components, frame type and the two things
    that change how Pillow shows it (EXIF orientation, Adobe colour transform)."""

    height: int
    width: int
    components: int
    frame: int                 # the SOFn marker's second byte, e.g. 0xC0
    orientation: int = 1       # EXIF orientation, 1 = upright
    adobe: bool = False        # an Adobe APP14 segment (RGB or YCCK JPEGs from Photoshop)
    complete: bool = True      # the file ends with the end-of-image marker


def _exif_orientation(payload: bytes) -> int:
    """The orientation tag of an APP1 Exif payload ("Exif\\0\\0" + TIFF), 1 when absent."""
    if not payload.startswith(b"Exif\x00\x00") or len(payload) < 14:
        return 1
    tiff = payload[6:]
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return 1
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return 1
    (entries,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
    for k in range(entries):
        at = ifd + 2 + 12 * k
        if at + 12 > len(tiff):
            break
        tag, kind, _count = struct.unpack(order + "HHI", tiff[at:at + 8])
        if tag == _ORIENTATION_TAG and kind == 3:
            (value,) = struct.unpack(order + "H", tiff[at + 8:at + 10])
            return value
    return 1


def read_jpeg_header(data: bytes) -> JpegHeader | None:
    """Parse the markers before the first scan; None when `data` is not a readable JPEG."""
    if data[:2] != b"\xff\xd8":
        return None
    orientation, adobe, at = 1, False, 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:           # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):   # markers without a length
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2:at + 4])
        payload = data[at + 4:at + 2 + length]
        if len(payload) != length - 2:
            return None
        if marker == 0xE1:
            orientation = _exif_orientation(payload)
        elif marker == 0xEE and payload.startswith(b"Adobe"):
            adobe = True
        elif marker in _ALL_FRAMES:
            if len(payload) < 6:
                return None
            _, height, width, components = struct.unpack(">BHHB", payload[:6])
            return JpegHeader(height, width, components, marker, orientation, adobe,
                              complete=data.endswith(b"\xff\xd9"))
        elif marker == 0xDA:         # a scan before any frame header
            return None
        at += 2 + length
    return None


def gpu_decodable(header: JpegHeader | None, *, min_side: int, max_pixels: int) -> bool:
    """Whether nvJPEG gives the picture Pillow's path would: otherwise the file goes to Pillow,
    which also names the reason of a file that cannot be used (too small, too large, cut
    short: Pillow refuses a truncated download, a GPU decoder might fill in the rest)."""
    return (header is not None and header.complete and header.frame in _GPU_FRAMES
            and header.components in (1, 3) and header.orientation == 1 and not header.adobe
            and min(header.height, header.width) >= min_side
            and header.height * header.width <= max_pixels)


def resolve_decoder(decoder: str, device) -> str:
    """"auto" -> "gpu" on a CUDA device, "cpu" elsewhere; "gpu" needs a CUDA device."""
    require_choice(decoder, DECODERS, what="decoder", option="--decode")
    if decoder == "auto":
        return "gpu" if device.type == "cuda" else "cpu"
    if decoder == "gpu" and device.type != "cuda":
        raise InputError("--decode gpu needs a CUDA device", field="--decode",
                         hint="use --decode cpu (or auto), or --device cuda")
    return decoder


# --- the worker side ------------------------------------------------------------------------

class ImageSource:
    """Item i -> a decoded sample (see `images.ImageDataset`) or, when `decoder == "gpu"` and
    the file is a plain JPEG, dict(image_id, path, jpeg=uint8 tensor of the file's bytes)."""

    def __init__(self, items: Sequence[tuple[str, Path]], *, min_size: int, max_size: int,
                 image_settings, decoder: str, root: str | Path | None = None):
        from .images import ImageDataset

        self.cpu = ImageDataset(items, min_size=min_size, max_size=max_size,
                                image_settings=image_settings, root=root)
        self.decoder = decoder

    def __len__(self) -> int:
        return len(self.cpu)

    def __getitem__(self, index: int) -> dict:
        import torch

        if self.decoder == "gpu":
            from .images import outside_root, unsafe_path_failure

            image_id, path = self.cpu.items[index]
            if outside_root(path, self.cpu.root):
                return unsafe_path_failure(image_id, path)
            try:
                data = Path(path).read_bytes()
            except OSError:
                data = b""           # Pillow's path names the reason (missing, unreadable)
            settings = self.cpu.image_settings
            if gpu_decodable(read_jpeg_header(data), min_side=settings.min_image_side,
                             max_pixels=settings.max_image_pixels):
                jpeg = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                return {"image_id": image_id, "path": str(path), "jpeg": jpeg}
        return self.cpu[index]


def _identity_collate(samples: list) -> list:
    return samples


# --- the main-process side ------------------------------------------------------------------

class DeviceDecoder:
    """Decodes the JPEG bytes of worker samples on `device`, a list per call, and resizes.

    `decode_batch(samples)` returns the samples with `image` ([3, h, w] float32 RGB 0-255,
    resized, on the device), `original_size` and `scale` filled in. When the batched call
    fails, each image is tried alone; an image the device cannot decode is decoded by
    Pillow, whose verdict (pixels or a failure reason) then stands. `fallbacks` counts those.
    """

    def __init__(self, device, *, min_size: int, max_size: int, image_settings):
        self.device = device
        self.min_size = min_size
        self.max_size = max_size
        self.image_settings = image_settings
        self.fallbacks = 0

    def _decode(self, datas: list):
        from torchvision.io import ImageReadMode, decode_jpeg

        with warnings.catch_warnings():
            # torchvision 0.29 announces decode_jpeg's move to torchcodec on every call.
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_jpeg(datas, mode=ImageReadMode.RGB, device=self.device)

    def decode_batch(self, samples: list[dict]) -> list[dict]:
        datas = [s["jpeg"] for s in samples]
        try:
            images = self._decode(datas)
        except RuntimeError:
            images = []
            for data in datas:
                try:
                    images.extend(self._decode([data]))
                except RuntimeError:
                    images.append(None)
        return [self._finish(sample, pixels) for sample, pixels in zip(samples, images)]

    def _finish(self, sample: dict, pixels) -> dict:
        from .images import ImageDataset, resize_pixels
        from .resize import resize_scale

        if pixels is None:
            self.fallbacks += 1
            return ImageDataset([(sample["image_id"], Path(sample["path"]))],
                                min_size=self.min_size, max_size=self.max_size,
                                image_settings=self.image_settings)[0]
        height, width = int(pixels.shape[1]), int(pixels.shape[2])
        scale = resize_scale(height, width, self.min_size, self.max_size)
        image = resize_pixels(pixels, scale)
        return {"image_id": sample["image_id"], "image": image,
                "original_size": (height, width), "scale": scale, "path": sample["path"]}


def iter_samples(items: Sequence[tuple[str, Path]], *, min_size: int, max_size: int,
                 image_settings, decoder: str, device, workers: int,
                 chunk_size: int, root: str | Path | None = None) -> Iterator[dict]:
    """Every item as a decoded, resized sample (or a failure sample: `image` None, `reason`),
    in the order the workers finish chunks of `chunk_size` items. With `root`, a path that
    leaves it is a failure sample and is never opened.

    CPU-decoded images come out of the DataLoader in pinned memory on CUDA, so the copy to
    the GPU can overlap the detector; GPU-decoded ones are on the device already.
    """
    from torch.utils.data import DataLoader

    cuda = device.type == "cuda"
    source = ImageSource(items, min_size=min_size, max_size=max_size,
                         image_settings=image_settings, decoder=decoder, root=root)
    loader = DataLoader(source, batch_size=chunk_size, shuffle=False, num_workers=workers,
                        collate_fn=_identity_collate, pin_memory=cuda,
                        persistent_workers=False, prefetch_factor=4 if workers else None)
    on_device = DeviceDecoder(device, min_size=min_size, max_size=max_size,
                              image_settings=image_settings)
    for chunk in loader:
        encoded = [s for s in chunk if "jpeg" in s]
        yield from (s for s in chunk if "jpeg" not in s)
        if encoded:
            yield from on_device.decode_batch(encoded)
