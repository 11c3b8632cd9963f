"""Loading the checkpoint layouts people have, from files the tests write in each layout.

No real bottom-up-attention weights can be had here, so a seeded random model is written
out in the MILVLG `.pth` layout and the detectron2 `.pkl` layout (names, shapes and head
conventions as those projects define them) and read back through the real loading code.
"""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch

from mrhp_prep.errors import InputError
from mrhp_prep.vision.butd import BUTDConfig, BUTDDetector
from mrhp_prep.vision.checkpoints import init_random, load_butd_weights
from mrhp_prep.vision.extract import Runner
from mrhp_prep.vision.images import ImageDataset, ImageSettings
from mrhp_prep.vision.models import DetectorSettings, build_detector
from rois_support import region_tolerances, write_photos
from tolerances import assert_close_in_scale, sum_rtol

CONFIG = BUTDConfig(rpn_post_nms_top_n=12)


@pytest.fixture(scope="module")
def source() -> BUTDDetector:
    model = BUTDDetector(CONFIG).eval()
    init_random(model, seed=7)
    with torch.no_grad():  # make the heads' layouts matter: distinct, non-trivial rows
        for name, tensor in model.state_dict().items():
            if "rpn.head" in name or "predictor" in name:
                tensor.copy_(torch.randn_like(tensor) * 0.05)
    return model


def _to_milvlg(state: dict) -> dict:
    out = {}
    for name, tensor in state.items():
        new = re.sub(r"\.conv\.weight$", ".weight", name) if (
            name.startswith("backbone.") or name.startswith("roi_heads.res5.")) else name
        new = new.replace("rpn.head.", "proposal_generator.rpn_head.")
        new = new.replace("roi_heads.attribute_predictor.cls_embed.",
                          "roi_heads.box_predictor.cls_embed.")
        new = new.replace("roi_heads.attribute_predictor.fc.",
                          "roi_heads.box_predictor.attr_linear1.")
        new = new.replace("roi_heads.attribute_predictor.attr_score.",
                          "roi_heads.box_predictor.attr_linear2.")
        out[new] = tensor.clone()
        if name.endswith("norm.running_var"):  # BatchNorm2d checkpoints carry this too
            out[new.replace("running_var", "num_batches_tracked")] = torch.tensor(0)
    # MILVLG's class embedding has one row more than there are classes.
    key = "roi_heads.box_predictor.cls_embed.weight"
    out[key] = torch.cat([out[key], torch.zeros(1, out[key].shape[1])])
    return out


def _ratio_to_size_major(array: np.ndarray, per_anchor: int) -> np.ndarray:
    rest = array.shape[1:]
    grouped = array.reshape(3, 4, per_anchor, *rest)          # (ratio, size, ...)
    return grouped.transpose(1, 0, 2, *range(3, 3 + len(rest))).reshape(array.shape)


def _to_detectron2(state: dict) -> dict:
    """Our layout -> py-bottom-up-attention's: sigmoid RPN logits with size-major anchors,
    background and "no attribute" last, no background box deltas."""
    milvlg = _to_milvlg(state)
    out = {}
    for name, tensor in milvlg.items():
        if name.endswith("num_batches_tracked"):
            continue
        array = tensor.numpy().copy()
        if "objectness_logits" in name:
            array = array[12:] - array[:12]                   # logit(fg) - logit(bg)
            array = _ratio_to_size_major(array, 1)
        elif "anchor_deltas" in name:
            array = _ratio_to_size_major(array, 4)
        elif "cls_score" in name or "attr_linear2" in name:
            array = np.concatenate([array[1:], array[:1]])
        elif "cls_embed." in name:
            array = array[:1601]
            array = np.concatenate([array[1:], array[:1]])
        elif "bbox_pred" in name:
            array = array[4:]
        name = (name.replace("cls_embed.", "cls_embedding.").replace("attr_linear1", "fc_attr")
                .replace("attr_linear2", "attr_score"))
        out[name] = array
    return out


def _model_from(path) -> BUTDDetector:
    model = BUTDDetector(CONFIG).eval()
    load_butd_weights(model, path)
    return model


def test_milvlg_pth_loads_every_tensor(source, tmp_path):
    path = tmp_path / "bua-caffe-frcn-r101_with_attributes.pth"
    torch.save({"model": _to_milvlg(source.state_dict()), "iteration": 0}, path)
    loaded = _model_from(path).state_dict()
    for name, tensor in source.state_dict().items():
        assert torch.equal(loaded[name], tensor), name


def test_detectron2_pkl_gives_the_same_detector(source, tmp_path):
    path = tmp_path / "faster_rcnn_from_caffe_attr.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"model": _to_detectron2(source.state_dict()), "__author__": "test"},
                    handle, protocol=4)
    model = _model_from(path)
    # Same object probabilities per anchor, same class and attribute probabilities, up to
    # the rounding of sums taken in another order (tolerances.py): the layouts reorder rows
    # and detectron2's objectness is one logit (fg - bg weights, rounded once) where ours is
    # two. A softmax moves by at most half the change of its logits (2 p (1 - p) <= 1/2), and
    # its normaliser is a sum of its classes' exponentials.
    hidden = torch.randn(1, 1024, 5, 7)
    probes = {}
    with torch.no_grad():
        for name, net in (("source", source), ("loaded", model)):
            logits, deltas = net.rpn.head(hidden)
            pair = logits.view(1, 2, 12, 5, 7).softmax(dim=1)[:, 1]
            region = torch.randn(3, 2048, generator=torch.Generator().manual_seed(5))
            classes, _ = net.roi_heads.box_predictor(region)
            attrs = net.roi_heads.attribute_predictor(region, classes)
            probes[name] = {"rpn logits": logits, "pair": pair, "deltas": deltas,
                            "class logits": classes, "classes": classes.softmax(1),
                            "attr logits": attrs, "attributes": attrs.softmax(1)}
    ours, theirs = probes["source"], probes["loaded"]
    rpn_logit_scale = float(ours["rpn logits"].abs().max())      # 1x1 conv over 512
    assert_close_in_scale(theirs["pair"], ours["pair"], sum_rtol(512 + 1, k=2),
                          rpn_logit_scale / 2, "objectness")
    assert_close_in_scale(theirs["deltas"], ours["deltas"], sum_rtol(512), what="deltas")
    for probs, logits, depth, classes in (("classes", "class logits", 2048, 1601),
                                          ("attributes", "attr logits", 512, 401)):
        bound = (sum_rtol(depth) * float(ours[logits].abs().max()) / 2   # the logits' sums
                 + sum_rtol(classes))                                    # the normaliser
        assert_close_in_scale(theirs[probs], ours[probs], bound, 1.0, probs)
    # And end to end on a photograph: the same regions and features.
    photo = write_photos(tmp_path, names=("chelsea",))["chelsea"]
    sample = ImageDataset([("chelsea", photo)], min_size=96, max_size=160,
                          image_settings=ImageSettings())[0]
    expected = Runner(source, torch.device("cpu"), "fp32", np.float32).run([sample])[0]
    found = Runner(model, torch.device("cpu"), "fp32", np.float32).run([sample])[0]
    assert (found.object_id == expected.object_id).all()
    assert (found.attr_id == expected.attr_id).all()
    # float32 runs whose heads sum in other orders (rois_support.region_tolerances)
    for name, (rtol, scale) in region_tolerances(source, expected).items():
        assert_close_in_scale(getattr(found, name), getattr(expected, name), rtol, scale, name)


def test_every_missing_unexpected_and_misshapen_key_is_reported(source, tmp_path):
    state = _to_milvlg(source.state_dict())
    del state["backbone.res3.1.conv2.weight"]
    del state["roi_heads.box_predictor.attr_linear2.bias"]
    state["roi_heads.box_predictor.bbox_pred.weight"] = torch.zeros(12, 2048)
    state["roi_heads.mask_head.predictor.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save({"model": state}, path)
    with pytest.raises(InputError) as caught:
        _model_from(path)
    text = str(caught.value)
    assert "backbone.res3.1.conv2.conv.weight" in text
    assert "roi_heads.attribute_predictor.attr_score.bias" in text
    assert "roi_heads.box_predictor.bbox_pred.weight: file (12, 2048), model (6404, 2048)" in text
    assert "roi_heads.mask_head.predictor.weight" in text


def test_python2_style_pickles_of_arrays_load(tmp_path):
    from mrhp_prep.vision.safe_pickle import load_restricted

    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.int64(5)}
    path = tmp_path / "old.pkl"
    path.write_bytes(pickle.dumps({"model": arrays}, protocol=2))  # bytes via _codecs.encode
    with open(path, "rb") as handle:
        loaded = load_restricted(handle, source=str(path))["model"]
    assert np.array_equal(loaded["a"], arrays["a"]) and loaded["b"] == 5


class _RunsCode:
    def __reduce__(self):
        import os
        return (os.system, ("touch CODE_RAN",))


def test_a_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"model": {"backbone.stem.conv1.weight": _RunsCode()}}, handle)
    with pytest.raises(InputError, match="refusing to load 'posix.system'"):
        _model_from(path)
    assert not (tmp_path / "CODE_RAN").exists()
    torch_path = tmp_path / "evil.pth"
    torch.save({"model": {"x": _RunsCode()}}, torch_path)
    with pytest.raises(InputError, match="weights-only"):
        _model_from(torch_path)
    assert not (tmp_path / "CODE_RAN").exists()


def test_random_weights_are_seeded_and_announced(caplog):
    import logging

    with caplog.at_level(logging.WARNING):
        first, identity = build_detector(DetectorSettings(weights="random", seed=3))
    assert identity == "random:3"
    assert "RANDOM WEIGHTS" in caplog.text
    second, _ = build_detector(DetectorSettings(weights="random", seed=3))
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name


def test_torchvision_model_loads_its_state_dict_and_gives_1024_d_regions(tmp_path):
    settings = DetectorSettings(model="frcnn-r50-fpn-v2", weights="random", seed=1,
                                min_size=96, max_size=160, rpn_post_nms_top_n=50)
    source, _ = build_detector(settings)
    path = tmp_path / "fasterrcnn_resnet50_fpn_v2_coco.pth"
    torch.save(source.detector.state_dict(), path)
    loaded, identity = build_detector(
        DetectorSettings(**{**settings.__dict__, "weights": str(path)}))
    assert len(identity) == 64
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    photo = write_photos(tmp_path, names=("coffee",))["coffee"]
    sample = ImageDataset([("coffee", photo)], min_size=96, max_size=160,
                          image_settings=ImageSettings())[0]
    regions = Runner(loaded, torch.device("cpu"), "fp32", np.float32).run([sample])[0]
    assert regions.features.shape == (regions.count, 1024)
    assert 10 <= regions.count <= 100
    assert (regions.attr_id == -1).all()
    assert (regions.boxes[:, 2] <= 179).all() and (regions.boxes[:, 3] <= 119).all()


def test_milvlg_anchor_buffer_in_the_file_is_used(source, tmp_path, caplog):
    from mrhp_prep.vision.boxes import caffe_cell_anchors
    from mrhp_prep.vision.checkpoints import ANCHOR_KEY

    state = _to_milvlg(source.state_dict())
    # Distinct from the built ones, as a file trained with other anchors would hold.
    stored = caffe_cell_anchors() * 1.25 + torch.arange(48, dtype=torch.float32).view(12, 4) / 8
    path = tmp_path / "with_anchors.pth"
    torch.save({"model": {**state, ANCHOR_KEY: stored}}, path)
    model = BUTDDetector(CONFIG).eval()
    with caplog.at_level("INFO", logger="mrhp_prep.vision.checkpoints"):
        report = load_butd_weights(model, path)
    assert report.anchors == "checkpoint" and ANCHOR_KEY not in report.unexpected
    assert "RPN cell anchors: the checkpoint's" in caplog.text
    assert torch.equal(model.rpn.cell_anchors, stored)
    # The anchors of a feature map are the file's, shifted by the 16-pixel stride.
    grid = model.rpn.anchors(2, 3)
    assert torch.equal(grid[:12], stored)
    assert torch.equal(grid[12:24], stored + torch.tensor([16.0, 0, 16, 0]))

    without = tmp_path / "without_anchors.pth"
    torch.save({"model": state}, without)
    model = BUTDDetector(CONFIG).eval()
    assert load_butd_weights(model, without).anchors == "built"
    assert torch.equal(model.rpn.cell_anchors, caffe_cell_anchors())

    wrong = tmp_path / "wrong_anchors.pth"
    torch.save({"model": {**state, ANCHOR_KEY: stored[:9]}}, wrong)
    with pytest.raises(InputError, match=r"cell_anchors\.0.*\(9, 4\)"):
        load_butd_weights(BUTDDetector(CONFIG).eval(), wrong)
