"""The detector's parts and its whole forward pass on real photographs (random weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrhp_prep.vision.boxes import caffe_cell_anchors
from mrhp_prep.vision.butd import BUTDConfig, BUTDDetector
from mrhp_prep.vision.checkpoints import init_random
from mrhp_prep.vision.extract import Runner
from mrhp_prep.vision.images import ImageDataset, ImageSettings
from mrhp_prep.vision.nms import caffe_nms
from mrhp_prep.vision.postprocess import select_regions
from rois_support import BUTD_WIDEST, region_tolerances, write_photos
from tolerances import assert_close_in_scale, network_rtol


def test_cell_anchors_are_the_faster_rcnn_ones():
    anchors = caffe_cell_anchors(16, (0.5, 1.0, 2.0), (8, 16, 32))
    # The anchors printed in the original Faster R-CNN code's generate_anchors.py.
    expected = [[-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
                [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
                [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359]]
    assert anchors.tolist() == expected
    assert caffe_cell_anchors().shape == (12, 4)  # BUTD: 4 scales x 3 ratios


def _reference_confidence(boxes, probs, thresh):
    """The extractors' rule, literally: one NMS per foreground class (the Caffe rule,
    itself checked against a literal loop in test_rois_conventions)."""
    confidence = torch.zeros(boxes.shape[0])
    for cls in range(1, probs.shape[1]):
        scores = probs[:, cls]
        keep = caffe_nms(boxes, scores, thresh)
        confidence[keep] = torch.maximum(confidence[keep], scores[keep])
    return confidence


def _random_boxes(n, generator):
    xy = torch.rand(n, 2, generator=generator) * 400
    wh = torch.rand(n, 2, generator=generator) * 200 + 4
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("spread", [0.01, 5.0])  # near-uniform and peaked class scores
def test_region_choice_equals_per_class_nms(spread):
    generator = torch.Generator().manual_seed(1)
    boxes = _random_boxes(150, generator)
    probs = (torch.randn(150, 401, generator=generator) * spread).softmax(dim=1)
    reference = _reference_confidence(boxes, probs, 0.3)
    confident = int((reference >= 0.2).sum())
    kept, confidence = select_regions(boxes, probs, nms_thresh=0.3, conf_thresh=0.2,
                                      min_boxes=10, max_boxes=100)
    assert len(kept) == min(max(confident, 10), 100)
    if 10 <= confident <= 100:      # stored in proposal order
        order = torch.nonzero(reference >= 0.2).flatten()
    else:                           # cut to the min or max: most confident first
        order = torch.sort(reference, descending=True, stable=True).indices[: len(kept)]
    assert kept.tolist() == order.tolist()
    assert torch.equal(confidence, reference[order])


def test_fewer_proposals_than_min_boxes_keeps_them_all():
    generator = torch.Generator().manual_seed(2)
    boxes = _random_boxes(6, generator)
    probs = torch.randn(6, 11, generator=generator).softmax(dim=1)
    kept, _ = select_regions(boxes, probs, min_boxes=10, max_boxes=100)
    assert sorted(kept.tolist()) == list(range(6))


@pytest.fixture(scope="module")
def model() -> BUTDDetector:
    detector = BUTDDetector(BUTDConfig(rpn_post_nms_top_n=12)).eval()
    init_random(detector, seed=0)
    return detector


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_photos(tmp_path_factory.mktemp("photos"),
                        names=("astronaut", "coffee", "rocket", "camera"))


def _samples(paths, min_size=96, max_size=160):
    dataset = ImageDataset([(p.stem, p) for p in paths], min_size=min_size, max_size=max_size,
                           image_settings=ImageSettings())
    return [dataset[i] for i in range(len(dataset))]


def test_forward_gives_regions_within_the_resized_image(model, photos):
    runner = Runner(model, torch.device("cpu"), "fp32", np.float32)
    samples = _samples([photos["coffee"], photos["camera"]])
    for sample, regions in zip(samples, runner.run(samples)):
        height, width = sample["original_size"]
        assert (regions.image_h, regions.image_w) == (height, width)
        assert 10 <= regions.count <= 100
        assert regions.features.shape == (regions.count, 2048)
        assert np.isfinite(regions.features).all()
        boxes = regions.boxes
        # Proposals are clipped to the resized image; stored boxes are those divided by the
        # scale, not clipped again (they may pass the original's last pixel by < 1 / scale).
        resized_h, resized_w = sample["image"].shape[1:]
        scale = np.float32(sample["scale"])
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= np.float32(resized_w - 1) / scale).all()
        assert (boxes[:, 3] <= np.float32(resized_h - 1) / scale).all()
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
        assert ((regions.object_id >= 0) & (regions.object_id < 1600)).all()
        assert ((regions.attr_id >= 0) & (regions.attr_id < 400)).all()


def test_boxes_are_in_original_pixels(model, tmp_path):
    # The same photo stored at two sizes maps to the same network input at half the scale;
    # the larger file's boxes must be the smaller file's times two.
    from PIL import Image
    from rois_support import photo

    small, large = tmp_path / "small.png", tmp_path / "large.png"
    image = Image.fromarray(photo("coffee"))          # 180 x 120
    image.save(small)
    image.resize((360, 240), Image.BILINEAR).save(large)
    small_sample, large_sample = _samples([small, large])
    assert small_sample["image"].shape == large_sample["image"].shape
    # 96 / 240 and (96 / 120) / 2 round the same real number: equal
    assert large_sample["scale"] == small_sample["scale"] / 2
    assert large_sample["original_size"] == (240, 360)
    # Same pixels in, only the bookkeeping differs: isolates the mapping back to the file.
    large_sample = dict(large_sample, image=small_sample["image"])
    runner = Runner(model, torch.device("cpu"), "fp32", np.float32)
    # The RPN drops boxes under 16 original pixels, a rule that sees the scale: off here.
    model.rpn.min_size = 0.0
    try:
        out_small, out_large = runner.run([small_sample])[0], runner.run([large_sample])[0]
    finally:
        model.rpn.min_size = 16.0
    assert out_small.count == out_large.count
    # The same proposals divided by scales a power of two apart (exact in float32), from two
    # runs of the network: equal but for the rounding a run may change (BLAS kernels chosen
    # by memory alignment), within the network bound relative to the larger image's side.
    np.testing.assert_array_equal(out_large.object_id, out_small.object_id)
    assert_close_in_scale(out_large.boxes, out_small.boxes * 2, network_rtol(BUTD_WIDEST),
                          max(large_sample["original_size"]), "boxes")
    assert out_large.boxes[:, 2].max() > 180  # beyond the small file: not clipped to it


def test_batched_equals_one_by_one(model, photos):
    runner = Runner(model, torch.device("cpu"), "fp32", np.float32)
    # Two same-shape images: no padding, so results must agree to float precision.
    same = _samples([photos["astronaut"], photos["camera"]])
    assert same[0]["image"].shape == same[1]["image"].shape
    for single, batched in zip([runner.run([s])[0] for s in same], runner.run(same)):
        np.testing.assert_array_equal(batched.object_id, single.object_id)
        # a batch of two may block the sums differently (rois_support.region_tolerances)
        for name, (rtol, scale) in region_tolerances(model, single).items():
            assert_close_in_scale(getattr(batched, name), getattr(single, name), rtol, scale,
                                  name)
    # Different shapes share a zero-padded batch; the smaller image's features stay close.
    mixed = _samples([photos["coffee"], photos["rocket"]])
    assert mixed[0]["image"].shape != mixed[1]["image"].shape
    for single, batched in zip([runner.run([s])[0] for s in mixed], runner.run(mixed)):
        assert batched.count == single.count
        cosine = (batched.features * single.features).sum(1) / (
            np.linalg.norm(batched.features, axis=1) * np.linalg.norm(single.features, axis=1))
        assert cosine.mean() > 0.95


def test_channels_last_layout_gives_the_same_regions(model, photos):
    # The CUDA path runs channels-last; the layout must not change any result.
    sample = _samples([photos["rocket"]])[0]
    reference = Runner(model, torch.device("cpu"), "fp32", np.float32).run([sample])[0]
    model.to(memory_format=torch.channels_last)
    try:
        image = sample["image"][None].contiguous(memory_format=torch.channels_last)
        height, width = image.shape[-2:]
        with torch.inference_mode():
            out = model(model.normalize(image).contiguous(memory_format=torch.channels_last),
                        torch.tensor([[height, width]]), torch.tensor([sample["scale"]]),
                        torch.tensor([sample["original_size"]]))[0]
    finally:
        model.to(memory_format=torch.contiguous_format)
    np.testing.assert_array_equal(out["object_id"].numpy(), reference.object_id)
    # another memory layout, other kernels: rounding only (rois_support.region_tolerances)
    for name, (rtol, scale) in region_tolerances(model, reference).items():
        assert_close_in_scale(out[name].numpy(), getattr(reference, name), rtol, scale, name)


def test_detectron2_backend_wiring_with_a_stand_in(monkeypatch):
    # detectron2 cannot be installed here. Its `layers.ROIPool` and `layers.nms`
    # wrap torchvision's kernels in current releases; a stand-in module with exactly those
    # two names checks that the backend passes boxes and scores through correctly.
    import sys
    import types

    import torchvision

    layers = types.SimpleNamespace(ROIPool=torchvision.ops.RoIPool,
                                   nms=torchvision.ops.nms)
    package = types.ModuleType("detectron2")
    package.layers = layers
    monkeypatch.setitem(sys.modules, "detectron2", package)
    monkeypatch.setitem(sys.modules, "detectron2.layers", layers)
    from mrhp_prep.vision.ops import get_ops

    d2, torch_ops = get_ops("detectron2"), get_ops("torch")
    features = torch.randn(2, 8, 20, 30)
    rois = torch.tensor([[0, 0.0, 0.0, 100.0, 80.0], [0, 40.0, 16.0, 300.0, 200.0],
                         [1, 10.0, 20.0, 60.0, 70.0]])
    assert torch.equal(d2.roi_pool(features, rois, 14, 1 / 16),
                       torch_ops.roi_pool(features, rois, 14, 1 / 16))
    generator = torch.Generator().manual_seed(0)
    many = _random_boxes(50, generator)
    scores = torch.rand(50, generator=generator)
    assert torch.equal(d2.nms(many, scores, 0.5), torch_ops.nms(many, scores, 0.5))


def test_region_head_in_chunks_equals_one_pass(model):
    features = torch.randn(2, 1024, 8, 10)
    proposals = [torch.tensor([[0.0, 0.0, 100.0, 80.0], [20.0, 16.0, 150.0, 120.0],
                               [5.0, 5.0, 60.0, 60.0]]), torch.tensor([[10.0, 20.0, 60.0, 70.0]])]
    with torch.inference_mode():
        whole = model.roi_heads(features, proposals)
        model.roi_heads.region_chunk = 2
        try:
            chunked = model.roi_heads(features, proposals)
        finally:
            model.roi_heads.region_chunk = type(model.roi_heads).region_chunk
    # Fewer regions per pass may block res5's sums differently: rounding only, within the
    # bound of the head's widest reduction, res5's 3x3 convolution over 512 channels.
    for name in ("features", "attr_logits"):
        assert_close_in_scale(chunked[name], whole[name], network_rtol(3 * 3 * 512), what=name)


def test_an_image_too_small_for_any_proposal_gives_zero_regions(model, tmp_path):
    from PIL import Image

    path = tmp_path / "small.png"
    Image.fromarray(np.full((12, 12, 3), 128, np.uint8)).save(path)
    sample = _samples([path])[0]
    # 12 px scaled to 96: the RPN's 16-original-pixel minimum is 128 resized pixels.
    runner = Runner(model, torch.device("cpu"), "fp32", np.float16)
    regions = runner.run([sample])[0]
    assert regions.count == 0 and regions.features.shape == (0, 2048)
    failures: list[dict] = []     # what the stage stores of it: nothing, a listed failure
    assert runner.run_checked([sample], failures) == []
    assert [(f["item"], f["reason"]) for f in failures] == [("small", "no-regions")]


def test_shape_batcher_emits_every_image_once_with_little_padding():
    from mrhp_prep.vision.images import ShapeBatcher

    shapes = [(600, 800), (600, 900), (900, 600), (600, 800), (600, 600), (600, 800),
              (600, 1000), (800, 600), (600, 800), (600, 600), (1000, 600)]
    batcher = ShapeBatcher(4, window=6)
    batches = []
    for index, shape in enumerate(shapes):
        batches += batcher.add({"image": torch.zeros(3, *shape), "index": index})
    batches += batcher.flush()
    seen = sorted(sample["index"] for batch in batches for sample in batch)
    assert seen == list(range(len(shapes)))
    for batch in batches:
        assert 1 <= len(batch) <= 4
        sizes = [tuple(s["image"].shape[-2:]) for s in batch]
        padded = max(h for h, _ in sizes) * max(w for _, w in sizes) * len(batch)
        assert padded <= 1.25 * sum(h * w for h, w in sizes)
    # Without padding (the default of extract-rois), a batch never mixes shapes.
    batcher = ShapeBatcher(4, window=6, max_padding=1.0)
    exact = []
    for index, shape in enumerate(shapes):
        exact += batcher.add({"image": torch.zeros(3, *shape), "index": index})
    exact += batcher.flush()
    assert sorted(s["index"] for batch in exact for s in batch) == list(range(len(shapes)))
    assert all(len({tuple(s["image"].shape) for s in batch}) == 1 for batch in exact)
    assert max(len(batch) for batch in exact) > 1
    # Four images of one shape leave together at once, without waiting for the window.
    batcher = ShapeBatcher(4)
    emitted = [b for i in range(4) for b in batcher.add({"image": torch.zeros(3, 60, 80)})]
    assert len(emitted) == 1 and len(emitted[0]) == 4
