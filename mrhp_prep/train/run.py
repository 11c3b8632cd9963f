"""`train` and `predict` as library functions: from cached features to a run folder.

The run folder (`cache/<dataset>/train/<fingerprint>/` by default) and its files are listed in
`run_folder.py`, which names, writes and reads them. The fingerprint covers the config and
the inputs' fingerprints: the same command reuses a finished run, and resumes an unfinished
one from checkpoints/last.pt.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ..cache import StageRun, open_stage
from ..errors import InputError
from ..locks import LOCK_NAME
from .data.checks import check_ids_fit_encoder
from .data.coverage import coverage_summary, require_full_coverage, store_coverage
from .data.dataset import Collate, DataConfig, FeatureSources, ReviewDataset
from .data.input_files import check_or_record_inputs
from .loop.checkpoints import load_checkpoint_for
from .loop.distributed import Distributed, pick_device
from .loop.guards import check_scores
from .loop.provenance import run_record
from .loop.trainer import Trainer, amp_settings, score_reviews
from .models import build_model
from .prepare import PreparedRun, absolute, prepare_run
from .report.metrics import evaluate_rankings, metrics_table
from .report.parameters import parameter_table
from .report.plots import plot_curves, plot_scores
from .report.predictions import write_predictions
from .run_folder import (CURVES_NAME, INPUT_ROLES, SCORES_NAME, checkpoint_dir,
                         has_checkpoints, predict_output_path, predictions_path,
                         read_run_config, write_model_table, write_run_config,
                         write_run_metrics)
from .settings.config import fingerprint_settings

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass
class TrainResult:
    path: Path
    reused: bool
    metrics: dict
    counts: dict


@contextlib.contextmanager
def _discarded_when_refused(run: StageRun | None, folder_was_empty: bool) -> Iterator[None]:
    """An InputError inside (bad data met while training) removes what the run wrote when no
    checkpoint was written yet, so the folder does not block the next run into it: the
    folder itself, unless it was there, empty, before the run (a `--out` the user made),
    which is emptied instead. A run with checkpoints keeps them, to resume once the input is
    fixed."""
    try:
        yield
    except InputError:
        if run is not None and not has_checkpoints(run.path):
            if folder_was_empty:
                for entry in run.path.iterdir():
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
                run.release()
            else:
                run.discard()
        raise


def _empty_folder(path: str | Path | None) -> bool:
    """Whether `path` is an existing folder with nothing in it (a lock file aside)."""
    return path is not None and Path(path).is_dir() and all(
        entry.name == LOCK_NAME for entry in Path(path).iterdir())


def _open_run(config: dict, inputs: dict, dataset: str, *, out, cache_dir, force,
              resume) -> StageRun:
    """The run's folder from `cache.open_stage`: a new, finished or unfinished one. With
    `resume`, that folder; open_stage refuses it when its inputs or settings changed since
    it started (naming each input with its fingerprint then and now), as here 'cannot
    resume'."""
    try:
        return open_stage("train", dataset=dataset, settings=fingerprint_settings(config),
                          inputs={k: v for k, v in inputs.items() if v},
                          format_version=FORMAT_VERSION, out=resume or out, cache_dir=cache_dir,
                          force=force and resume is None)
    except InputError as refused:
        if resume is None:
            raise
        raise InputError(f"cannot resume: {refused.what}", file=refused.file,
                         hint="restore the inputs the run started with, or train anew without "
                              "--resume (the run's own command makes a new run folder; with "
                              "--out, add --force to start that folder over)") from None


def train(*, manifest: str | Path | None = None, rois: str | Path | None = None,
          text: str | Path | None = None, probes: str | Path | None = None,
          model: str = "sancl", config_file: str | Path | None = None, preset: str = "auto",
          protocol: str = "paper", overrides: Iterable[str] = (), out: str | Path | None = None,
          cache_dir: str | Path = "cache", force: bool = False, resume: str | Path | None = None,
          device: str = "auto", num_workers: int = 0, show_progress: bool = True,
          keep_process_group: bool = False) -> TrainResult:
    """Train `model` on the cached features; returns the run folder and its metrics.

    Under torchrun the process group is torn down at the end unless `keep_process_group`
    (another run follows in the same processes: setting a group up again on the launcher's
    store can hang)."""
    distributed = Distributed.from_env(device)
    prepared = prepare_run(manifest=manifest, rois=rois, text=text, probes=probes, model=model,
                           config_file=config_file, preset=preset, protocol=protocol,
                           overrides=overrides, resume=resume)
    config, inputs = prepared.config, prepared.inputs
    run: StageRun | None = None
    folder_was_empty = _empty_folder(resume or out)
    if distributed.is_main:
        run = _open_run(config, inputs, prepared.manifest.name, out=out, cache_dir=cache_dir,
                        force=force, resume=resume)
    path = Path(distributed.broadcast(str(run.path) if run else None))
    complete = distributed.broadcast(run.complete if run else None)
    if complete:
        if distributed.is_main:
            log.info("train: reusing the finished run in %s", path)
        finished = run.manifest() if run else {}
        if not keep_process_group:
            distributed.close()
        return TrainResult(path, True, finished.get("metrics", {}), finished.get("counts", {}))
    # only the main process has a run (and its folder's lock): a full or read-only disk is an
    # EnvironmentFault naming the folder, and the lock is released however training ends
    with (run.computing() if run else contextlib.nullcontext()), \
            _discarded_when_refused(run, folder_was_empty):
        if distributed.is_main:
            check_or_record_inputs(path, inputs)     # a resumed run: the inputs it started from
            write_run_config(path, config, inputs)
            write_model_table(path, parameter_table(prepared.model))
        trainer = Trainer(prepared.model, prepared.splits["train"], prepared.splits["dev"],
                          config, path, device=pick_device(device, distributed),
                          relevance_threshold=prepared.manifest.relevance_threshold,
                          distributed=distributed, num_workers=num_workers,
                          show_progress=show_progress)
        state = trainer.fit()
        result = _finish(run, path, trainer, state, prepared, config)
    distributed.barrier()
    if not keep_process_group:
        distributed.close()
    return result


def _finish(run: StageRun | None, path: Path, trainer: Trainer, state, prepared: PreparedRun,
            config: dict) -> TrainResult:
    """Score the dev and test splits with the best epoch's weights and write the run's
    results into `path` (on the main process): predictions, metrics, plots, then
    MANIFEST.json."""
    distributed, threshold = trainer.distributed, trainer.threshold
    sources, splits, coverage = prepared.sources, prepared.splits, prepared.coverage
    best_epoch = trainer.load_best()
    frames, metrics = {}, {}
    for split in ("dev", "test"):
        if len(splits[split]):
            frames[split] = trainer.score(splits[split])
            check_scores(frames[split], f"{split} split (best epoch)", splits[split])
            if distributed.is_main:
                metrics[split] = evaluate_rankings(frames[split], threshold).summary()
    built = trainer.unwrapped
    counts = {f"{name}_reviews": len(ds) for name, ds in splits.items()}
    counts.update({f"{name}_products": len(ds.table.products) for name, ds in splits.items()})
    dropped = {reason: len(ids) for ds in splits.values()
               for reason, ids in ds.table.dropped.items()}
    counts["reviews_left_out"] = sum(dropped.values())
    counts["images_without_rois"] = sources.images_missing
    counts["reviews_without_probe"] = sum(ds.table.reviews_without_probe for ds in splits.values())
    counts["parameters"] = parameters = built.num_parameters()
    counts["coverage"] = coverage_summary(coverage)
    model = config["model"]["name"]
    result_metrics = {
        "model": model, "monitor": config["train"]["monitor"], "best_epoch": best_epoch,
        "epochs_run": state.epoch, "stopped_early": state.stopped_early,
        "relevance_threshold": threshold, "world_size": distributed.world_size,
        "parameters_without_embeddings": parameters,
        **metrics, "epochs": state.history,
    }
    if distributed.is_main:
        for split, frame in frames.items():
            write_predictions(predictions_path(path, split), frame)
        write_run_metrics(path, {**result_metrics, **run_record(config, run, built)})
        if state.history:
            plot_curves(path / CURVES_NAME, state.history, config["train"]["monitor"], best_epoch)
        plot_scores(path / SCORES_NAME, frames)
        for ds in splits.values():
            for reason, ids in ds.table.dropped.items():
                for review_id in ids:
                    run.add_failure(review_id, reason, split=ds.table.name)
        run.finish(counts, metrics={k: v for k, v in result_metrics.items() if k != "epochs"},
                   model=model)
        if metrics:
            log.info("best epoch %d of %d\n%s", best_epoch, state.epoch, metrics_table(metrics))
    return TrainResult(path, False, result_metrics, counts)


def predict(run_dir: str | Path, *, manifest: str | Path | None = None,
            text: str | Path | None = None, rois: str | Path | None = None,
            probes: str | Path | None = None, products: Sequence[str] | None = None,
            split: str | None = None, checkpoint: str = "best", output: str | Path | None = None,
            device: str = "auto", batch_rows: int | None = None,
            allow_partial: bool = False) -> tuple[Path, dict]:
    """Score and rank the reviews of `products` (or of a split) with a trained run.

    The manifest and stores default to the run's own; products never seen in training come
    with a manifest and stores made for them. A static-vector text store with another
    vocabulary is mapped into the run's vocabulary by token string. Stores that cover only
    part of the chosen reviews and their images are refused as `train` refuses them, unless
    `allow_partial` (or they are the run's own stores and the run was allowed partial ones).
    """
    if products is None and split is None:
        raise InputError("say which reviews to score", hint="pass --product ID (repeatable) "
                                                             "or --split")
    run_dir = Path(run_dir)
    config = read_run_config(run_dir, complete=True)
    trained = config["inputs"]
    manifest = absolute(manifest) or trained["manifest"]
    text = absolute(text) or trained["text"]
    # a model trained without RoIs (or probes) takes none, whatever is passed
    rois = (absolute(rois) or trained["rois"]) if trained["rois"] else None
    probes = (absolute(probes) or trained["probes"]) if trained["probes"] else None
    vocabularies, vectors = None, None
    if text and text != trained["text"] and FeatureSources.peek_text_mode(text) == "static":
        from .data.stores import TextShards

        training = {f: TextShards(trained["text"], f) for f in ("product", "review")}
        vocabularies = {f: s.vocab for f, s in training.items()}
        vectors = {f: s.vectors for f, s in training.items()}
    sources = FeatureSources(manifest, rois=rois, text=text, probes=probes,
                             vocabularies=vocabularies)
    data_config = DataConfig.from_config(config["data"])
    selected = ReviewDataset(sources, sources.split(split, products), data_config)
    chosen = {"manifest": manifest, "rois": rois, "text": text, "probes": probes}
    own_stores = all(chosen[role] == trained[role] for role in INPUT_ROLES)
    coverage = _predict_coverage(sources, selected, products, split,
                                 allow_partial or (own_stores and data_config.allow_partial))
    table = selected.table
    model = build_model(config["model"]["name"], config["model"], sources.model_inputs(vectors))
    check_ids_fit_encoder(sources, model)
    weights = checkpoint_dir(run_dir) / (f"{checkpoint}.pt" if not checkpoint.endswith(".pt")
                                         else checkpoint)
    if not weights.is_file():
        raise InputError(f"no checkpoint {weights.name}", file=str(weights.parent),
                         hint="use best, last or epoch-NNN")
    load_checkpoint_for(model, weights, config["model"]["name"])
    torch_device = pick_device(device, Distributed())
    model.to(torch_device)
    collate = Collate(data_config, share_products=True)
    frame = score_reviews(model, selected, collate,
                          torch_device, batch_rows or int(config["train"]["eval_batch_size"]),
                          amp=amp_settings(torch_device, config["train"]["amp"]))
    check_scores(frame, f"products scored with {weights}")
    output = Path(output) if output else predict_output_path(run_dir, sources.manifest.name)
    write_predictions(output, frame)
    summary = {"products": len(table.products), "reviews": len(table),
               "reviews_left_out": sum(len(v) for v in table.dropped.values()),
               "checkpoint": weights.name,
               **{f"{name} coverage": c.describe() for name, c in coverage.items()}}
    return output, summary


def _predict_coverage(sources: FeatureSources, selected: ReviewDataset,
                      products: Sequence[str] | None, split: str | None,
                      allow_partial: bool) -> dict:
    """The stores' coverage of the reviews `predict` was asked to score (and of their
    products' and reviews' images); refuses a selection with nothing to score, and partial
    stores unless `allow_partial`. Messages name the option that chose the reviews."""
    option, what = (("--split", f"split {split}") if split is not None else
                    ("--product", "product(s) " + ", ".join(list(products)[:5])))
    reviews = sources.manifest.reviews
    if products is not None:
        reviews = reviews[reviews["product_id"].isin(list(products))]
    if split is not None:
        reviews = reviews[reviews["split"] == split]
    if reviews.empty:
        raise InputError(f"{what}: no reviews in the manifest", field=option,
                         file=str(sources.manifest.table_path("reviews")),
                         hint=f"choose a {option.lstrip('-')} that has reviews in this manifest")
    items = set(reviews["product_id"]) | set(reviews["review_id"])
    coverage = store_coverage(sources, {"selected": selected}, items=items)
    require_full_coverage(coverage, allow_partial, how_to_allow="--allow-partial")
    if not len(selected):
        reasons = "; ".join(f"{reason}: {len(ids)}"
                            for reason, ids in selected.table.dropped.items())
        raise InputError(f"{what}: none of its {len(reviews)} reviews is left to score "
                         f"({reasons})", field=option,
                         hint="pass the stores made for this manifest")
    return coverage
