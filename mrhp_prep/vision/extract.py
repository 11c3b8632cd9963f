"""The `extract-rois` stage: photographs in, one packed RoI store out.

Images are decoded and resized in DataLoader worker processes while the detector runs;
decoded images are grouped by shape into batches (same-shape batches need no padding);
results are written in part files of `part_size` images each, atomically, so a killed
run resumes where it stopped. At the end the parts are packed into `rois.h5`.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..cache import StageRun, open_stage
from ..errors import InputError
from ..devices import resolve_device, resolve_precision
from ..shards import resolve_shard, shard_of
from .images import ImageSettings, ShapeBatcher, folder_images, manifest_images
from .loader import iter_samples, resolve_decoder
from .models import FEATURE_DIMS, DetectorSettings, build_detector, weights_identity
from .precision import full_float32
from ..verify import file_records
from .parts import PARTS_DIR, done_in_parts, list_parts, usable_parts
from .store import FORMAT_VERSION, STORE_NAME, ImageRegions
from .store_join import consolidate
from .region_checks import Storable, storage_check
from .writer import PartWriter

log = logging.getLogger(__name__)

STAGE = "extract-rois"


@dataclass
class RunOptions:
    """How to run; `max_padding` and `kernels` change the output (they enter the fingerprint)."""

    batch_size: int | None = None        # None: 8 on CUDA, 1 on CPU
    workers: int | None = None           # None: up to 8 on CUDA, 1 on CPU
    device: str = "auto"
    part_size: int = 256
    # 1.0: only images of one shape share a batch, so each is computed as if alone (as the
    # reference does); above 1, mixed shapes are zero-padded, which changes their features.
    max_padding: float = 1.0
    decode: str = "cpu"                  # cpu (exact), gpu or auto (see loader.py)
    kernels: str = "fused"               # fused or reference arithmetic order (kernels.py)


# --- the model on a device ------------------------------------------------------------------

@dataclass
class Runner:
    """A detector on a device with its precision; `run(samples)` -> list of ImageRegions."""

    model: object
    device: "object"
    precision: str
    feature_dtype: np.dtype
    channels_last: bool = False          # pass images channels-last (see kernels.py)

    def autocast(self):
        import torch

        if self.precision == "fp32":
            return full_float32()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def run(self, samples: list[dict]) -> list[ImageRegions]:
        """The regions of each sample, as computed (whatever their values): the benchmarks
        and the model tests compare these, unchecked, with the reference."""
        return [self._regions(sample, out, out["features"].astype(self.feature_dtype))
                for sample, out in self._forward(samples)]

    def run_checked(self, samples: list[dict], failures: list[dict]) -> list[ImageRegions]:
        """The regions of the samples that can be stored; each other sample becomes a failure
        record in `failures` (no region, NaN or inf, features beyond the storage dtype)."""
        kept = []
        for sample, out in self._forward(samples):
            checked = detector_check(out, self.precision, self.feature_dtype)
            if checked.problem is None:
                kept.append(self._regions(sample, out, checked.features))
            else:
                failures.append({"item": sample["image_id"], "reason": checked.problem[0],
                                 "detail": checked.problem[1], "path": sample["path"]})
        return kept

    def _forward(self, samples: list[dict]) -> list[tuple[dict, dict]]:
        """(sample, its outputs as float32 / integer numpy arrays) per sample."""
        import torch

        device = self.device
        model = self.model
        non_blocking = device.type == "cuda"
        heights = [s["image"].shape[1] for s in samples]
        widths = [s["image"].shape[2] for s in samples]
        # Pad after normalizing: padding is 0 in mean-subtracted space, as the originals did.
        batch = torch.zeros(len(samples), 3, max(heights), max(widths), device=device)
        for i, sample in enumerate(samples):
            image = sample["image"].to(device, non_blocking=non_blocking)
            batch[i, :, : heights[i], : widths[i]] = model.normalize(image[None])[0]
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        image_sizes = torch.tensor(list(zip(heights, widths)), device=device)
        scales = torch.tensor([s["scale"] for s in samples], device=device, dtype=torch.float32)
        originals = torch.tensor([s["original_size"] for s in samples], device=device)
        with torch.inference_mode(), self.autocast():
            outputs = model(batch, image_sizes, scales, originals)
        return [(sample, {k: v.float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy()
                          for k, v in out.items()})
                for sample, out in zip(samples, outputs)]

    def _regions(self, sample: dict, cpu: dict, features: np.ndarray) -> ImageRegions:
        """`features`: [n, D] already in the storage dtype."""
        return ImageRegions(
            image_id=sample["image_id"], image_h=int(sample["original_size"][0]),
            image_w=int(sample["original_size"][1]), features=features,
            boxes=cpu["boxes"].astype(np.float32), object_id=cpu["object_id"].astype(np.int32),
            object_conf=cpu["object_conf"].astype(np.float32),
            attr_id=cpu["attr_id"].astype(np.int32),
            attr_conf=cpu["attr_conf"].astype(np.float32))


def detector_check(out: dict, precision: str, feature_dtype) -> Storable:
    """Whether the detector's regions of one image can be stored (`Storable`: the problem,
    or the features cast to `feature_dtype`).

    `out` is the detector's output for the image as numpy arrays (float32 features, before
    the cast to `feature_dtype`); its `backbone_finite` flag tells an overflow of the
    network's arithmetic (damaged or wrongly scaled weights) from other causes."""
    checked = storage_check(out["features"], {
        "boxes": out["boxes"], "object scores": out["object_conf"],
        "attribute scores": out["attr_conf"]}, feature_dtype, "the detector")
    if checked.problem is None:
        return checked
    reason, detail = checked.problem
    arithmetic = "float32" if precision == "fp32" else f"{precision} autocast"
    if not bool(out.get("backbone_finite", True)):
        outcome = "it kept no region" if reason == "no-regions" else "its regions hold NaN or inf"
        reason, detail = "overflow", (
            f"the detector's activations overflowed {arithmetic} (NaN or inf in its backbone), "
            f"so {outcome}: the weights are damaged or wrongly scaled")
    elif reason == "no-regions":
        detail = ("the detector kept no region for this image: its proposal network proposed "
                  "none (every box degenerate, too small or NaN)")
    elif reason == "non-finite":
        detail += f" in {arithmetic}: check the weights"
    if precision != "fp32" and reason in ("overflow", "non-finite"):
        detail += "; or try --precision fp32"
    return Storable((reason, detail))


# --- the stage ------------------------------------------------------------------------------

def _failure_record(sample: dict) -> dict:
    return {"item": sample["image_id"], "reason": sample["reason"], "detail": sample["detail"],
            "path": sample["path"]}




def extract_rois(*, manifest: str | None = None, images_root: str | None = None,
                 images: str | None = None, detector: DetectorSettings,
                 image_settings: ImageSettings | None = None,
                 feature_dtype: str = "float16", precision: str = "fp32",
                 run_options: RunOptions | None = None, num_shards: int | None = None,
                 shard_index: int | None = None, out: str | None = None,
                 cache_dir: str = "cache", force: bool = False,
                 progress_bar: bool = True) -> StageRun:
    """Run the stage (or find it finished); returns the complete stage folder's StageRun.

    `image_settings` and `run_options` default to `ImageSettings()` and `RunOptions()`."""
    image_settings = image_settings if image_settings is not None else ImageSettings()
    run_options = run_options if run_options is not None else RunOptions()
    if (manifest is None) == (images is None):
        raise InputError("give either --manifest (with --images-root) or --images",
                         hint="--manifest DIR --images-root DIR, or --images FOLDER")
    if manifest is not None:
        if images_root is None:
            raise InputError("--manifest needs --images-root (the folder the crawled images "
                             "are in)", hint="e.g. --images-root data/images")
        dataset_name, items = manifest_images(manifest, images_root)
        # The images' sizes and times count too: a re-crawl must not reuse old features.
        inputs = {"manifest": manifest, "images_root": images_root}
    else:
        if not Path(images).is_dir():
            raise InputError("not a folder", file=str(images), hint="pass a folder of images")
        dataset_name, items = Path(images).resolve().name, folder_images(images)
        inputs = {"images": images}
    num_shards, shard_index = resolve_shard(num_shards, shard_index)
    items = [(i, p) for i, p in items if shard_of(i, num_shards) == shard_index]

    from .ops import get_ops

    get_ops(detector.backend)  # fail before any folder is made when the backend is missing
    device = resolve_device(run_options.device)
    precision = resolve_precision(precision, device)
    decoder = resolve_decoder(run_options.decode, device)
    from .kernels import changes_arithmetic, check_kernels

    check_kernels(run_options.kernels)
    if detector.weights != "random" and not Path(detector.weights).is_file():
        raise InputError("weights file not found", file=detector.weights,
                         hint="pass a checkpoint path, or --weights random for a smoke run")
    identity = weights_identity(detector.weights, detector.seed)
    settings = {**asdict(detector), "weights": identity, **asdict(image_settings),
                "feature_dtype": feature_dtype, "precision": precision,
                "max_padding": run_options.max_padding,
                "num_shards": num_shards, "shard_index": shard_index}
    if detector.weights != "random":
        del settings["seed"]  # the seed only matters for random weights
    if changes_arithmetic(run_options.kernels, detector.model):
        # Stores computed in the reference order keep the fingerprint they always had.
        settings["kernels"] = run_options.kernels
    if decoder == "gpu":
        # nvJPEG's pixels may differ slightly from Pillow's; Pillow-decoded stores keep the
        # fingerprint they always had.
        settings["decoder"] = "nvjpeg"
    run = open_stage(STAGE, dataset=dataset_name, settings=settings, inputs=inputs,
                     format_version=FORMAT_VERSION, out=out, cache_dir=cache_dir, force=force)
    if run.complete:
        log.info("already extracted: %s (use --force to redo)", run.path)
        return run

    started = time.perf_counter()
    with run.computing():
        try:
            parts = usable_parts(run.path)   # a damaged part is deleted: its images are redone
            done, failures = done_in_parts(parts)
            todo = [(i, p) for i, p in items if i not in done]
            if done:
                log.info("resuming: %d of %d images already in %d part files", len(done),
                         len(items), len(parts))
            dtype = np.float16 if feature_dtype == "float16" else np.float32
            if todo:
                # A manifest's paths must stay inside the images root (it may come from
                # anywhere); a folder given with --images is the user's own.
                failures += _extract_parts(
                    todo, run.path, detector, image_settings, dtype, precision, device,
                    run_options, identity, settings, progress_bar, decoder,
                    root=images_root if manifest is not None else None)
            return _finish(run, items, dataset_name, identity, detector.model, dtype,
                           time.perf_counter() - started, failures)
        except InputError:
            run.discard_unstarted()  # a refused run (e.g. bad weights) leaves nothing behind
            raise


def _extract_parts(todo, folder: Path, detector: DetectorSettings, image_settings, dtype,
                   precision, device, run_options: RunOptions, identity: str, settings: dict,
                   progress_bar: bool, decoder: str = "cpu", root: str | None = None
                   ) -> list[dict]:
    """Extract the regions of `todo` into new part files; returns the failure records the
    parts hold."""
    from ..progress import progress
    from .kernels import prepare_kernels

    model, _ = build_detector(detector)
    model = model.to(device)
    channels_last = prepare_kernels(model, run_options.kernels, device)
    runner = Runner(model, device, precision, dtype, channels_last)
    cuda = device.type == "cuda"
    # On a CPU the convolutions are already as wide as the cores; batching only adds padding.
    batch_size = run_options.batch_size or (8 if cuda else 1)
    workers = run_options.workers
    if workers is None:
        cpus = os.cpu_count() or 1
        workers = min(8, max(cpus - 1, 1)) if cuda else (1 if cpus > 1 else 0)
    samples = iter_samples(todo, min_size=detector.min_size, max_size=detector.max_size,
                           image_settings=image_settings, decoder=decoder, device=device,
                           workers=workers, chunk_size=batch_size, root=root)
    attrs = {"model": detector.model, "weights_sha256": identity, "settings": settings,
             "part": True}
    batcher = ShapeBatcher(batch_size, max_padding=run_options.max_padding)
    pending: list[ImageRegions] = []
    failures: list[dict] = []
    written_failures: list[dict] = []
    feature_dim = FEATURE_DIMS[detector.model]
    (folder / PARTS_DIR).mkdir(exist_ok=True)

    writer = PartWriter(folder, feature_dim=feature_dim, feature_dtype=dtype, attrs=attrs)

    def flush(force: bool = False) -> None:
        if pending or failures:
            if force or len(pending) + len(failures) >= run_options.part_size:
                writer.write(pending, failures)
                written_failures.extend(failures)
                pending.clear()
                failures.clear()

    bar = progress(total=len(todo), desc="extract-rois", unit="img") if progress_bar else None
    try:
        with writer:
            for sample in samples:
                if sample["image"] is None:
                    failures.append(_failure_record(sample))
                    if bar is not None:
                        bar.update(1)
                    continue
                for batch in batcher.add(sample):
                    pending.extend(runner.run_checked(batch, failures))
                    if bar is not None:
                        bar.update(len(batch))
                flush()
            for batch in batcher.flush():
                pending.extend(runner.run_checked(batch, failures))
                if bar is not None:
                    bar.update(len(batch))
            flush(force=True)
    finally:
        if bar is not None:
            bar.close()
    return written_failures


def _finish(run: StageRun, items, dataset: str, identity: str, model_name: str, dtype,
            seconds: float, failures: Iterable[dict] | None = None) -> StageRun:
    """Pack the part files into rois.h5 and finish the run. `failures`: the failure records
    the parts hold (read from them when not given)."""
    parts = list_parts(run.path)
    if failures is None:
        failures = done_in_parts(parts)[1]
    wanted = {i for i, _ in items}
    failures_by_reason: dict[str, int] = defaultdict(int)
    for failure in failures:
        if failure["item"] in wanted:
            run.add_failure(**failure)
            failures_by_reason[failure["reason"]] += 1
    attrs = {"model": model_name, "weights_sha256": identity, "settings": run.settings}
    feature_dim = FEATURE_DIMS[model_name]
    joined = consolidate(parts, run.path / STORE_NAME, attrs=attrs, feature_dim=feature_dim,
                         feature_dtype=dtype)
    counts = {"images": len(items), "extracted": joined.images, "regions": joined.regions,
              "failed": len(run.failures), **{f"failed_{k}": v for k, v in
                                              sorted(failures_by_reason.items())}}
    box_counts = joined.region_counts
    run.finish(counts, model=model_name, weights_sha256=identity, feature_dim=feature_dim,
               dataset=dataset, store=STORE_NAME, files=file_records(run.path, [STORE_NAME]),
               regions_per_image={
                   "min": int(min(box_counts)) if box_counts else 0,
                   "max": int(max(box_counts)) if box_counts else 0,
                   "mean": round(float(np.mean(box_counts)), 2) if box_counts else 0.0},
               extract_seconds=round(seconds, 2))
    shutil.rmtree(run.path / PARTS_DIR, ignore_errors=True)
    return run
