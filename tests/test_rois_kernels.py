"""`--kernels fused`: frozen norms folded into the convolutions, channels-last layout.

The oracle for a folded block is the definition of the frozen norm written out here in
float64; the whole detector is compared with its unfolded self on real photographs, with
norm statistics far from the identity so that folding has something to change.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.nn import functional as F
from torchvision.ops.misc import FrozenBatchNorm2d

from mrhp_prep.cli import cli
from mrhp_prep.errors import InputError
from mrhp_prep.vision.backbone import ConvNorm
from mrhp_prep.vision.butd import BUTDConfig, BUTDDetector
from mrhp_prep.vision.checkpoints import init_random
from mrhp_prep.vision.extract import Runner
from mrhp_prep.vision.images import ImageDataset, ImageSettings
from mrhp_prep.vision.kernels import fold_frozen_norms, prepare_kernels
from mrhp_prep.vision.store import RoiStore
from rois_support import BUTD_WIDEST, FAST, region_tolerances, tiny, write_photos
from tolerances import assert_close_in_scale, network_rtol, sum_rtol


def _perturb_norms(model: torch.nn.Module, seed: int) -> None:
    """Norm statistics like a trained network's: scales, shifts, means and variances all
    away from 1 and 0 (init_random leaves most of them at the identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, FrozenBatchNorm2d):
                channels = module.weight.shape[0]
                module.weight.mul_(torch.rand(channels, generator=generator) * 0.4 + 0.8)
                module.bias.add_(torch.randn(channels, generator=generator) * 0.1)
                module.running_mean.add_(torch.randn(channels, generator=generator) * 0.1)
                module.running_var.mul_(torch.rand(channels, generator=generator) * 0.45 + 0.8)


@pytest.mark.parametrize("stride,dilation,kernel", [(1, 1, 1), (2, 1, 1), (1, 2, 3), (2, 1, 7)])
def test_folded_block_equals_convolution_then_frozen_norm(stride, dilation, kernel):
    block = ConvNorm(16, 24, kernel, stride=stride, padding=dilation * (kernel // 2),
                     dilation=dilation)
    generator = torch.Generator().manual_seed(kernel + stride)
    with torch.no_grad():
        block.conv.weight.normal_(0, 0.2, generator=generator)
    _perturb_norms(block, seed=3)
    norm = block.norm
    x = torch.randn(2, 16, 19, 23, generator=generator)
    # The frozen norm by its definition, in float64: (y - mean) / sqrt(var + eps) * w + b.
    y = F.conv2d(x.double(), block.conv.weight.double(), stride=stride,
                 padding=dilation * (kernel // 2), dilation=dilation)
    expected = ((y - norm.running_mean.double().view(1, -1, 1, 1))
                / (norm.running_var.double().view(1, -1, 1, 1) + norm.eps).sqrt()
                * norm.weight.double().view(1, -1, 1, 1) + norm.bias.double().view(1, -1, 1, 1))
    # The float32 rounding bound of each output (tolerances.py): a sum of n = C_in * k * k
    # products and the bias, with the folded weights and bias rounded too (rsqrt within 2 ulp,
    # a product, the shift's product and difference): (n + 5) * eps times the magnitude of
    # the terms, |x| convolved with |folded weights| plus |bias| and |mean * scale|.
    scale = (norm.weight.double() / (norm.running_var.double() + norm.eps).sqrt()).view(-1, 1, 1, 1)
    terms = (F.conv2d(x.double().abs(), (block.conv.weight.double() * scale).abs(),
                      stride=stride, padding=dilation * (kernel // 2), dilation=dilation)
             + norm.bias.double().abs().view(1, -1, 1, 1)
             + (norm.running_mean.double().view(-1, 1, 1, 1) * scale).abs().view(1, -1, 1, 1))
    depth = 16 * kernel * kernel
    assert fold_frozen_norms(block) == 1
    assert isinstance(block.norm, torch.nn.Identity) and block.conv.bias is not None
    with torch.no_grad():
        got = block(x).double()
    assert ((got - expected).abs() <= sum_rtol(depth + 5) * terms).all()
    assert not torch.equal(got, expected)         # float32 against float64: it is a bound
    assert fold_frozen_norms(block) == 0          # folding twice would scale twice


@pytest.fixture(scope="module")
def detectors():
    model = BUTDDetector(BUTDConfig(rpn_post_nms_top_n=12)).eval()
    init_random(model, seed=0)
    _perturb_norms(model, seed=1)
    # Peaked class scores, as a trained model's are: untrained ones are so nearly uniform
    # that rounding at 1e-7 reorders near-equal confidences (measured in the docs).
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.mul_(5)
        model.roi_heads.attribute_predictor.attr_score.weight.mul_(5)
    fused = copy.deepcopy(model)
    return model, fused, prepare_kernels(fused, "fused")


def test_fused_detector_stores_the_same_regions(detectors, tmp_path):
    model, fused, channels_last = detectors
    assert channels_last
    assert fused.backbone.res4[0].conv1.conv.weight.is_contiguous(
        memory_format=torch.channels_last)
    paths = write_photos(tmp_path, names=("astronaut", "coffee", "rocket", "camera"))
    dataset = ImageDataset([(name, path) for name, path in paths.items()], min_size=96,
                           max_size=160, image_settings=ImageSettings())
    reference = Runner(model, torch.device("cpu"), "fp32", np.float32)
    faster = Runner(fused, torch.device("cpu"), "fp32", np.float32, channels_last)
    for index in range(len(dataset)):
        sample = dataset[index]
        a, b = reference.run([sample])[0], faster.run([sample])[0]
        # The stored regions are the same ones, in the same order ...
        assert a.count == b.count, sample["image_id"]
        np.testing.assert_array_equal(a.object_id, b.object_id)
        np.testing.assert_array_equal(a.attr_id, b.attr_id)
        # ... and their numbers differ by the rounding of other summation orders, bounded by
        # the network's widest reduction (rois_support.region_tolerances).
        for name, (rtol, scale) in region_tolerances(model, a).items():
            assert_close_in_scale(getattr(b, name), getattr(a, name), rtol, scale,
                                  f"{sample['image_id']} {name}")
        assert not np.array_equal(a.features, b.features)   # the fused kernels really ran
        assert np.ptp(a.object_conf) > 0.01      # the scores are not a near-uniform tie


def test_reference_kernels_leave_the_model_as_loaded(detectors):
    model = detectors[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert prepare_kernels(model, "reference") is False
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(model.backbone.stem.conv1.norm, FrozenBatchNorm2d)
    with pytest.raises(InputError, match="kernels"):
        prepare_kernels(model, "fast")


def test_models_without_frozen_norms_run_as_they_are_on_a_cpu():
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    weight = plain[0].weight.detach().clone()
    assert prepare_kernels(plain, "fused", torch.device("cpu")) is False
    assert torch.equal(plain[0].weight, weight) and plain[0].weight.is_contiguous()


def test_fused_kernels_are_used_by_the_stage_and_stored(tmp_path):
    photos = tmp_path / "photos"
    write_photos(photos, names=("coffee", "rocket"))
    runner = CliRunner()
    folders = {}
    for kernels in ("fused", "reference"):
        result = runner.invoke(cli, ["extract-rois", "--images", str(photos), "--cache-dir",
                                     str(tmp_path / "cache"), "--kernels", kernels,
                                     "--dtype", "float32", *tiny(**FAST)])
        assert result.exit_code == 0, result.output
        folders[kernels] = Path(result.stdout.strip().splitlines()[-1])
    assert folders["fused"] != folders["reference"]
    with RoiStore(folders["fused"]) as fused, RoiStore(folders["reference"]) as reference:
        assert fused.attrs["settings"]["kernels"] == "fused"
        # the reference order is how stores were always computed: same fingerprint as before
        assert "kernels" not in reference.attrs["settings"]
        for image_id in ("coffee.jpg", "rocket.jpg"):
            a, b = reference.image(image_id), fused.image(image_id)
            np.testing.assert_array_equal(np.asarray(a["object_id"]), np.asarray(b["object_id"]))
            # float32 runs in two summation orders (see rois_support.region_tolerances)
            rtol = network_rtol(BUTD_WIDEST)
            assert_close_in_scale(b["boxes"], a["boxes"], rtol, max(a["image_h"], a["image_w"]),
                                  f"{image_id} boxes")
            features_a, features_b = np.asarray(a["features"]), np.asarray(b["features"])
            assert_close_in_scale(features_b, features_a, rtol, what=f"{image_id} features")
            # other float32 rounding: the fused convolutions really ran
            assert not np.array_equal(features_a, features_b)
    bad = runner.invoke(cli, ["extract-rois", "--images", str(photos), "--kernels", "fast"])
    assert bad.exit_code == 2 and "fused" in bad.output


def test_unknown_kernels_are_refused_before_any_folder_is_made(tmp_path):
    from mrhp_prep.vision.extract import RunOptions, extract_rois
    from mrhp_prep.vision.models import DetectorSettings

    photos = tmp_path / "photos"
    write_photos(photos, names=("coffee",))
    with pytest.raises(InputError, match="kernels"):
        extract_rois(images=str(photos), detector=DetectorSettings(weights="random"),
                     run_options=RunOptions(kernels="fast"), cache_dir=str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists()
