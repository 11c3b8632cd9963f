"""Click commands of the RoI stages: extract-rois, merge-rois, import-rois, export-rois.

Light at import time: torch and h5py are imported inside the commands.
"""

from __future__ import annotations

import click

from ..cache import FAILURES_NAME
from ..cli_options import device_option, manifest_option, shard_options, stage_options
from ..devices import PRECISIONS
from ..stage_summary import fail_if_none_done, report

_MODELS = ["butd-r101", "frcnn-r50-fpn-v2"]

_feature_dtype_option = click.option(
    "--dtype", "feature_dtype", type=click.Choice(["float16", "float32"]), default="float16",
    help="Storage type of the features.")


def _store_rows(run, extra: dict | None = None) -> dict:
    info = run.manifest()
    counts = info["counts"]
    rows = {key: value for key, value in counts.items()}
    if info.get("regions_per_image"):
        per = info["regions_per_image"]
        rows["regions per image"] = f"{per['min']}-{per['max']} (mean {per['mean']})"
    if info.get("num_failures"):
        rows["failures"] = f"{info['num_failures']} (see {run.path / FAILURES_NAME})"
        first = (info.get("failures") or [{}])[0]
        if first.get("detail"):
            rows["first failure"] = f"{first['item']}: {first['reason']}: {first['detail']}"
    rows.update(extra or {})
    return rows


@click.command("extract-rois")
@manifest_option(required=False,
                 help="Ingest output folder; its images.parquet lists the images.")
@click.option("--images-root", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder the manifest's image paths are relative to.")
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
              help="Instead of a manifest: every image under this folder (id = relative path).")
@click.option("--model", type=click.Choice(_MODELS), default="butd-r101",
              help="butd-r101: bottom-up attention, 2048-d, Visual Genome classes and "
                   "attributes. frcnn-r50-fpn-v2: torchvision's COCO detector, 1024-d.")
@click.option("--weights", required=True,
              help="Checkpoint file (MILVLG .pth, detectron2-style .pkl, torchvision .pth), or "
                   "'random' for an untrained smoke run.")
@click.option("--seed", type=int, default=0, help="Seed of --weights random.")
@click.option("--backend", type=click.Choice(["torch", "detectron2"]), default="torch",
              help="Where RoI pooling and NMS come from; detectron2 must be importable.")
@click.option("--min-size", type=click.IntRange(min=16), default=600,
              help="Resize so the shorter side is this many pixels ...")
@click.option("--max-size", type=click.IntRange(min=16), default=1000,
              help="... unless the longer side would exceed this.")
@click.option("--nms", "nms_thresh", type=click.FloatRange(0, 1), default=0.3,
              help="Per-class NMS IoU when choosing regions.")
@click.option("--conf", "conf_thresh", type=click.FloatRange(0, 1), default=0.2,
              help="Keep regions whose best class confidence is at least this.")
@click.option("--min-boxes", type=click.IntRange(min=1), default=10,
              help="At least this many regions per image (the most confident).")
@click.option("--max-boxes", type=click.IntRange(min=1), default=100,
              help="At most this many regions per image.")
@click.option("--rpn-pre-nms-top-n", type=click.IntRange(min=1), default=6000,
              help="Proposals kept before the RPN's NMS.")
@click.option("--rpn-post-nms-top-n", type=click.IntRange(min=1), default=300,
              help="Proposals kept after the RPN's NMS (regions are chosen among these).")
@_feature_dtype_option
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="fp32 reproduces the reference extractor (TF32 off on GPUs). fp16 / bf16 "
                   "autocast (auto = fp16 on a GPU) is faster but not identical; see the docs.")
@click.option("--kernels", type=click.Choice(["fused", "reference"]), default="fused",
              show_default=True,
              help="fused: frozen batch norms folded into the convolutions, channels-last "
                   "layout (faster; in fp32 the rounding differs by ~1e-6 and the stored "
                   "regions were the same in the measurements in the docs). reference: "
                   "convolution then norm, NCHW on a CPU, the reference extractor's order of "
                   "arithmetic.")
@device_option()
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per forward pass [default: 8 on CUDA, 1 on CPU].")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Decoding processes [default: up to 8 on CUDA, 1 on CPU].")
@click.option("--decode", type=click.Choice(["auto", "cpu", "gpu"]), default="cpu",
              help="Where JPEGs are decoded: cpu = Pillow in the workers (the reference's "
                   "pixels); gpu = nvJPEG on the CUDA device for plain JPEGs (faster, pixels "
                   "not verified identical; the rest by Pillow); auto = gpu on CUDA, else cpu.")
@click.option("--max-padding", type=click.FloatRange(min=1.0), default=1.0,
              help="1.0: only same-shape images share a batch (exact, as one by one). Above 1: "
                   "mixed shapes are zero-padded up to this factor of their pixels (fewer, "
                   "fuller batches; other features and regions, see the docs).")
@click.option("--part-size", type=click.IntRange(min=1), default=256,
              help="Images per part file: the most a killed run has to redo.")
@click.option("--min-image-side", type=click.IntRange(min=1), default=10,
              help="Images whose shorter side is below this (1x1 placeholders, icons) are "
                   "failures.")
@click.option("--max-image-pixels", type=click.IntRange(min=1), default=178_956_970,
              help="Refuse larger images (decompression bombs); the default is Pillow's.")
@shard_options
@stage_options
def extract_rois(manifest, images_root, images, model, weights, seed, backend, min_size,
                 max_size, nms_thresh, conf_thresh, min_boxes, max_boxes, rpn_pre_nms_top_n,
                 rpn_post_nms_top_n, feature_dtype, precision, kernels, device, batch_size,
                 workers, decode, max_padding, part_size, min_image_side, max_image_pixels,
                 num_shards, shard_index, out, cache_dir, force):
    """Detect regions in images and store their features in one packed HDF5 file (rois.h5).

    Example: mrhp-prep extract-rois --manifest cache/sample/ingest/<fp>
    --images-root data/images --weights bua-caffe-frcn-r101_with_attributes.pth
    """
    from .extract import RunOptions
    from .images import ImageSettings
    from .extract import extract_rois as run_extract
    from .models import DetectorSettings

    detector = DetectorSettings(
        model=model, weights=weights, seed=seed, backend=backend, min_size=min_size,
        max_size=max_size, nms_thresh=nms_thresh, conf_thresh=conf_thresh, min_boxes=min_boxes,
        max_boxes=max_boxes, rpn_pre_nms_top_n=rpn_pre_nms_top_n,
        rpn_post_nms_top_n=rpn_post_nms_top_n)
    run = run_extract(
        manifest=manifest, images_root=images_root, images=images, detector=detector,
        image_settings=ImageSettings(min_image_side, max_image_pixels),
        feature_dtype=feature_dtype, precision=precision,
        run_options=RunOptions(batch_size=batch_size, workers=workers, device=device,
                               part_size=part_size, max_padding=max_padding,
                               decode=decode, kernels=kernels),
        num_shards=num_shards, shard_index=shard_index, out=out, cache_dir=cache_dir,
        force=force)
    info = run.manifest()
    extra = {"model": f"{info.get('model')} ({info.get('feature_dim')}-d)",
             "weights": info.get("weights_sha256", "")[:16]}
    if info.get("extract_seconds"):
        extra["seconds"] = info["extract_seconds"]
    report("extract-rois finished", _store_rows(run, extra), run.path)
    fail_if_none_done(info["counts"]["extracted"], info["counts"]["images"], "images", run.path)
    return str(run.path)


@click.command("merge-rois")
@click.argument("shards", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--virtual", is_flag=True, default=False,
              help="Write only the index, over HDF5 virtual datasets that read the regions from "
                   "the shard files (no copy: seconds instead of a copy at disk speed, no "
                   "second copy on disk); the shard folders must then stay where they are.")
@stage_options
def merge_rois(shards, virtual, out, cache_dir, force):
    """Join the output folders of extract-rois shards (SHARDS...) into one store.

    By default the regions are copied into one self-contained rois.h5 (features in one
    block, which training reads through a memory map); the shard folders may then go.
    One folder alone repacks a store an older version wrote (features in chunks).

    Example: mrhp-prep merge-rois cache/sample/extract-rois/<fp0> cache/sample/extract-rois/<fp1>
    """
    from .stages import merge_rois as run_merge

    run = run_merge(list(shards), out=out, cache_dir=cache_dir, force=force, virtual=virtual)
    report("merge-rois finished", _store_rows(run), run.path)
    return str(run.path)


@click.command("import-rois")
@click.argument("source", type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(["npz", "tsv", "mcr-pth"]), required=True,
              help="npz: MILVLG per-image files; tsv: bottom-up-attention TSV (6 or 10 "
                   "columns); mcr-pth: MCR's per-item .pth lists.")
@manifest_option(required=False,
                 help="Map file paths (relative to SOURCE) to the manifest's image ids.")
@click.option("--suffix", default=".jpg",
              help="Image file suffix that replaces .npz/.pth names to form image paths.")
@click.option("--dtype", "feature_dtype", type=click.Choice(["float16", "float32"]),
              default="float32", help="Storage type of the features (float32 keeps them as "
                                      "the files hold them, so export-rois gives them back).")
@click.option("--name", default=None, help="Dataset name in the cache (default: the manifest's "
                                           "or SOURCE's folder name).")
@stage_options
def import_rois(source, fmt, manifest, suffix, feature_dtype, name, out, cache_dir, force):
    """Read region features made by other tools (SOURCE file or folder) into a store.

    Example: mrhp-prep import-rois features/ --format npz --manifest cache/sample/ingest/<fp>
    """
    from .stages import import_rois as run_import

    run = run_import(source, fmt=fmt, manifest=manifest, suffix=suffix,
                     feature_dtype=feature_dtype, name=name, out=out, cache_dir=cache_dir,
                     force=force)
    report("import-rois finished", _store_rows(run), run.path)
    counts = run.manifest()["counts"]
    fail_if_none_done(counts["images"], counts["images"] + counts["failed"], "items", run.path)
    return str(run.path)


@click.command("export-rois")
@click.argument("store", type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(["npz", "tsv"]), required=True,
              help="npz: one file per image (MILVLG keys, flat ids); tsv: one rois.tsv "
                   "(10 columns, base64 arrays).")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Folder to write into.")
def export_rois(store, fmt, out):
    """Write the regions of a store (STORE: an output folder or rois.h5) for other tools.

    A stage folder's rois.h5 is first checked against the size and SHA-256 its MANIFEST.json
    records (1.2-1.6 GB/s measured; MRHP_VERIFY=size checks the size only).

    Example: mrhp-prep export-rois cache/sample/extract-rois/<fp> --format npz --out feats/
    """
    from .stages import export_rois as run_export

    count = run_export(store, fmt=fmt, out=out)
    report("export-rois finished", {"images": count, "format": fmt}, out)
    return str(out)
