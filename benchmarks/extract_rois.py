"""extract-rois: the earlier systems' way against ours, same model, same photographs.

Earlier way (the MILVLG extractor's loop): for each image, decode and resize in the main
loop, one image per forward under no_grad, choose regions with one NMS per class (1600
calls), write one compressed .npz.

Ours: decoding and resizing in DataLoader worker processes overlapping the model, images
batched by shape, inference_mode, frozen norms folded into the convolutions and
channels-last layout (`--kernels fused`, the default), regions chosen with one NMS over
confident (proposal, class) pairs, results packed into HDF5 part files. `--kernels
reference` (the earlier systems' order of arithmetic) is timed too, to show what each part
is worth.

Both run the real ResNet-101 bottom-up-attention model (random weights: speed does not
depend on their values, except that untrained class scores send our region choice to its
exact all-classes path every time, its slowest). Prints, per side, images/s of wall time
and CPU seconds per image (this process and its workers: steadier than wall time on a
shared machine), medians of --repeats, and the ratios.

    python benchmarks/extract_rois.py            # quick: small images, 30 proposals
    python benchmarks/extract_rois.py --full     # the earlier systems' settings (slow on CPU)
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mrhp_prep.vision.butd import BUTDConfig, BUTDDetector  # noqa: E402
from mrhp_prep.vision.checkpoints import init_random  # noqa: E402
from mrhp_prep.vision.nms import caffe_nms  # noqa: E402
from mrhp_prep.vision.resize import resize_like_opencv, resize_scale  # noqa: E402
from mrhp_prep.vision.extract import Runner  # noqa: E402
from mrhp_prep.vision.images import ImageDataset, ImageSettings, ShapeBatcher  # noqa: E402
from mrhp_prep.vision.kernels import prepare_kernels  # noqa: E402
from mrhp_prep.vision.loader import _identity_collate  # noqa: E402
from mrhp_prep.vision.store_write import write_store  # noqa: E402

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle", "hubble_deep_field",
          "immunohistochemistry", "cat", "retina", "camera", "brick", "page"]


def make_photos(folder: Path, count: int, longest: int) -> list[Path]:
    """Real photographs saved as JPEG with the longer side `longest` (product-photo sizes)."""
    import skimage.data

    paths = []
    for index in range(count):
        name = PHOTOS[index % len(PHOTOS)]
        data = getattr(skimage.data, name)()
        data = data[0] if isinstance(data, tuple) else data
        image = Image.fromarray(np.asarray(data)).convert("RGB")
        scale = longest / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)),
                             Image.BILINEAR)
        path = folder / f"{index:03d}_{name}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def cpu_seconds() -> float:
    """CPU time of this process plus its finished children (DataLoader workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# --- the earlier way ------------------------------------------------------------------------

def earlier_select(boxes: torch.Tensor, probs: torch.Tensor, config: BUTDConfig) -> torch.Tensor:
    confidence = torch.zeros(boxes.shape[0])
    for cls in range(1, probs.shape[1]):
        scores = probs[:, cls]
        keep = caffe_nms(boxes, scores, config.nms_thresh)
        confidence[keep] = torch.where(scores[keep] > confidence[keep], scores[keep],
                                       confidence[keep])
    keep = torch.nonzero(confidence >= config.conf_thresh).flatten()
    if len(keep) < config.min_boxes:
        keep = torch.argsort(confidence, descending=True)[: config.min_boxes]
    elif len(keep) > config.max_boxes:
        keep = torch.argsort(confidence, descending=True)[: config.max_boxes]
    return keep


def run_earlier(model: BUTDDetector, paths: list[Path], out: Path) -> tuple[float, float]:
    config = model.config
    started, cpu = time.perf_counter(), cpu_seconds()
    for path in paths:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        height, width = rgb.shape[:2]
        scale = resize_scale(height, width, config_min_size, config_max_size)
        bgr = torch.from_numpy(rgb[:, :, ::-1].astype(np.float32)) - model.pixel_mean.view(1, 1, 3)
        image = resize_like_opencv(bgr.permute(2, 0, 1)[None], scale)   # as cv2.resize(fx=s)
        size = list(image.shape[-2:])
        with torch.set_grad_enabled(False):
            res4 = model.backbone(image)
            proposals = model.rpn(res4, torch.tensor([size]), torch.tensor([scale]))
            heads = model.roi_heads(res4, proposals)
        probs = heads["class_logits"].softmax(dim=1)
        attrs = heads["attr_logits"].softmax(dim=1)
        boxes = proposals[0] / scale
        keep = earlier_select(boxes, probs, config)
        np.savez_compressed(out / f"{path.stem}.npz", x=heads["features"][keep].numpy(),
                            bbox=boxes[keep].numpy(), num_bbox=len(keep), image_h=height,
                            image_w=width, objects_id=probs[keep, 1:].argmax(1).numpy(),
                            objects_conf=probs[keep, 1:].max(1).values.numpy(),
                            attrs_id=attrs[keep, 1:].argmax(1).numpy(),
                            attrs_conf=attrs[keep, 1:].max(1).values.numpy())
    return time.perf_counter() - started, cpu_seconds() - cpu


def time_region_choice(repeats: int) -> None:
    """Region choice alone, 300 proposals x 1601 classes: the per-class loop against ours,
    for untrained (near-uniform) and trained-like (peaked) class scores."""
    from mrhp_prep.vision.postprocess import select_regions

    config = BUTDConfig()
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=generator) * 600
    boxes = torch.cat([xy, xy + torch.rand(300, 2, generator=generator) * 300 + 8], dim=1)
    for label, spread in (("untrained-like scores", 0.01), ("trained-like scores", 6.0)):
        probs = (torch.randn(300, 1601, generator=generator) * spread).softmax(dim=1)
        naive, fast = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            earlier_select(boxes, probs, config)
            naive.append(time.perf_counter() - started)
            started = time.perf_counter()
            select_regions(boxes, probs)
            fast.append(time.perf_counter() - started)
        n, f = statistics.median(naive), statistics.median(fast)
        print(f"region choice, {label}: per-class loop {n * 1000:.0f} ms, ours {f * 1000:.1f} ms"
              f"  ->  {n / f:.0f}x")


# --- ours ---------------------------------------------------------------------------------

def run_ours(model: BUTDDetector, paths: list[Path], out: Path, batch_size: int, workers: int,
             precision: str, channels_last: bool) -> tuple[float, float]:
    from torch.utils.data import DataLoader

    started, cpu = time.perf_counter(), cpu_seconds()
    dataset = ImageDataset([(p.name, p) for p in paths], min_size=config_min_size,
                           max_size=config_max_size, image_settings=ImageSettings())
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                        collate_fn=_identity_collate, prefetch_factor=4 if workers else None)
    runner = Runner(model, torch.device("cpu"), precision, np.float16, channels_last)
    batcher = ShapeBatcher(batch_size)
    regions = []
    for chunk in loader:
        for sample in chunk:
            for batch in batcher.add(sample):
                regions.extend(runner.run(batch))
    for batch in batcher.flush():
        regions.extend(runner.run(batch))
    write_store(out / "part-00000.h5", regions, feature_dim=2048)
    return time.perf_counter() - started, cpu_seconds() - cpu


def main() -> None:
    global config_min_size, config_max_size
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="600/1000 images, 300 proposals (tens of seconds per image on CPU)")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1,
                        help="ours: images per forward (the stage uses 1 on CPU, 8 on CUDA)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--bf16", action="store_true",
                        help="also time ours with bfloat16 autocast on the CPU")
    args = parser.parse_args()
    if args.full:
        config_min_size, config_max_size, proposals, longest = 600, 1000, 300, 1000
    else:
        config_min_size, config_max_size, proposals, longest = 160, 256, 30, 640
    config = BUTDConfig(rpn_post_nms_top_n=proposals)
    model = BUTDDetector(config).eval()
    init_random(model, seed=0)
    fused = copy.deepcopy(model)
    channels_last = prepare_kernels(fused, "fused")
    # side -> (model, precision, channels-last input)
    ours = {"ours reference kernels": (model, "fp32", False),
            "ours": (fused, "fp32", channels_last)}
    if args.bf16:
        ours["ours bf16"] = (fused, "bf16", channels_last)
    print(f"extract-rois benchmark: {args.images} photos (longer side {longest} px), resized "
          f"to {config_min_size}/{config_max_size}, {proposals} proposals, ResNet-101 C4, "
          f"CPU threads {torch.get_num_threads()}, median of {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = make_photos(tmp, args.images, longest)
        sides = {"earlier": [], **{side: [] for side in ours}}
        cpu_per_image = {side: [] for side in sides}
        # One warm-up image each so that one-off allocations are not timed.
        run_earlier(model, paths[:1], tmp)
        for net, precision, layout in ours.values():
            run_ours(net, paths[:1], tmp, 1, 0, precision, layout)
        for repeat in range(args.repeats):
            for side in sides:
                out = tmp / f"{side.replace(' ', '_')}-{repeat}"
                out.mkdir()
                if side == "earlier":
                    seconds, cpu = run_earlier(model, paths, out)
                else:
                    net, precision, layout = ours[side]
                    seconds, cpu = run_ours(net, paths, out, args.batch_size, args.workers,
                                            precision, layout)
                sides[side].append(args.images / seconds)
                cpu_per_image[side].append(cpu / args.images)
                print(f"  repeat {repeat + 1}: {side:22s} {args.images / seconds:6.2f} images/s"
                      f"  {cpu / args.images:6.2f} CPU s/image", flush=True)
    time_region_choice(args.repeats)
    earlier = statistics.median(sides["earlier"])
    earlier_cpu = statistics.median(cpu_per_image["earlier"])
    print(f"earlier way: {earlier:.2f} images/s, {earlier_cpu:.2f} CPU s/image "
          f"(best {max(sides['earlier']):.2f} images/s)")
    for side, rates in sides.items():
        if side != "earlier":
            rate = statistics.median(rates)
            cpu = statistics.median(cpu_per_image[side])
            # Other load only ever slows a run down, so best-of ratios are shown as well.
            print(f"{side}: {rate:.2f} images/s, {cpu:.2f} CPU s/image  ->  "
                  f"{rate / earlier:.2f}x the earlier way's speed (best of each: "
                  f"{max(rates) / max(sides['earlier']):.2f}x), "
                  f"{earlier_cpu / cpu:.2f}x less CPU time")


config_min_size, config_max_size = 600, 1000

if __name__ == "__main__":
    main()
