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
