"""Real photographs (scikit-image's bundled ones) written small, for the RoI tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tolerances import EPS32, network_rtol, sum_rtol

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

# The widest reduction of the bottom-up-attention detector, for tolerances.network_rtol: the
# RPN's 3x3 convolution over res4's 1024 channels (res5's 3x3 over 512 sums 4608 terms, the
# region heads 2048 and 2304).
BUTD_WIDEST = 3 * 3 * 1024


def region_tolerances(model, reference) -> dict[str, tuple[float, float]]:
    """(rtol, scale) per stored array for comparing another float32 run of `model` with the
    regions `reference` (tolerances.assert_close_in_scale):

    - features: relative to their largest magnitude;
    - boxes, in original pixels: a delta's error moves a box by its anchor's width times it,
      and anchors are clipped to the image, so relative to the image's longer side;
    - object confidences: a softmax moves by at most half the largest change of its logits
      (sum over j of |dp_i/dz_j| = 2 p_i (1 - p_i) <= 1/2), and the logits' errors are
      relative to their magnitude, recomputed here from the stored features (float64)."""
    rtol = network_rtol(BUTD_WIDEST)
    predictor = model.roi_heads.box_predictor.cls_score
    features = np.asarray(reference.features, np.float64)
    logits = (features @ predictor.weight.detach().double().numpy().T
              + predictor.bias.detach().double().numpy())
    return {"features": (rtol, float(np.abs(features).max())),
            "boxes": (rtol, float(max(reference.image_h, reference.image_w))),
            "object_conf": (rtol, float(np.abs(logits).max()) / 2)}


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


def opencv_resize_tolerance(height: int, width: int, value_range: float = 255.0) -> float:
    """Largest difference between our bilinear resize and cv2.resize (INTER_LINEAR) of float32
    pixels spanning `value_range`. OpenCV computes each sample's source position in float32,
    so its interpolation weight is off by up to the rounding of a coordinate as large as the
    longer side, eps * max(height, width); the weight multiplies a neighbour difference of up
    to the value range, in each of the two passes (rows, then columns). The two weighted
    sums of two terms add 4 * eps of the value range (tolerances.py)."""
    return (2 * EPS32 * max(height, width) + sum_rtol(4)) * value_range
