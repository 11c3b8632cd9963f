"""Real photographs (scikit-image's bundled ones) written small, for the RoI tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# name -> (skimage.data function, size (width, height) to write)
PHOTOS = {
    "astronaut": ("astronaut", (160, 160)),
    "coffee": ("coffee", (180, 120)),
    "chelsea": ("chelsea", (150, 100)),
    "rocket": ("rocket", (107, 160)),
    "camera": ("camera", (128, 128)),       # grayscale
    "motorcycle": ("stereo_motorcycle", (150, 104)),
}


def photo(name: str) -> np.ndarray:
    """The photograph as an array at its test size (RGB, or L for grayscale)."""
    import skimage.data

    function, size = PHOTOS[name]
    data = getattr(skimage.data, function)()
    if isinstance(data, tuple):
        data = data[0]
    image = Image.fromarray(np.asarray(data))
    return np.asarray(image.resize(size, Image.BILINEAR))


def write_photos(folder: Path, names=("astronaut", "coffee", "chelsea", "rocket", "camera"),
                 subfolder: str = "") -> dict[str, Path]:
    """JPEG files `folder/subfolder/<name>.jpg`; returns name -> path."""
    target = folder / subfolder if subfolder else folder
    target.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names:
        path = target / f"{name}.jpg"
        Image.fromarray(photo(name)).save(path, quality=92)
        paths[name] = path
    return paths


def tiny(**overrides) -> list[str]:
    """extract-rois options for tests: the real ResNet-101 model with random weights on
    small images and few proposals (the region head costs ~6 GFLOP per proposal)."""
    options = {"weights": "random", "min-size": 96, "max-size": 160, "rpn-post-nms-top-n": 12,
               "workers": 0}
    options.update({k.replace("_", "-"): v for k, v in overrides.items()})
    args = []
    for key, value in options.items():
        args += [f"--{key}", str(value)]
    return args


# Fewer proposals and regions still: for tests about files and bookkeeping, not the model.
FAST = {"rpn_post_nms_top_n": 4, "min_boxes": 2, "max_boxes": 4}


def gain_weights(path: Path, gain: float) -> Path:
    """A bottom-up-attention checkpoint (our module names) in which every convolution averages
    its inputs times `gain` (weight gain / fan-in), norms are the identity and the RPN and
    region heads are zero: finite weights whose activations grow by about (1 + gain^3) per
    residual block (33 blocks) on a bright image and stay 0 on a black one (the stem sees
    pixels below the mean). Each tensor is one number expanded to its shape, so the file is
    small."""
    import torch

    from mrhp_prep.vision.butd import BUTDConfig, BUTDDetector

    state = {}
    for name, tensor in BUTDDetector(BUTDConfig()).state_dict().items():
        if not tensor.is_floating_point():
            state[name] = tensor
            continue
        value = 0.0
        if name.endswith("running_var") or name.endswith("norm.weight"):
            value = 1.0
        elif name.endswith("conv.weight") and not name.startswith("rpn."):
            value = gain / (tensor[0].numel())
        state[name] = torch.full((), value).expand(tensor.shape)
    torch.save(state, path)
    return path


def solid_photos(folder: Path, **levels: int) -> None:
    """Grey-level JPEGs `folder/<name>.jpg` of 96 x 128 pixels, one per name=level."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, level in levels.items():
        Image.new("RGB", (128, 96), (level,) * 3).save(folder / f"{name}.jpg", quality=95)
