"""Click commands `train`, `evaluate` and `predict` (thin shells over `run.py` / `metrics.py`)."""

from __future__ import annotations

import json
import math
import os

import click

from ..stage_summary import report
from .models import MODELS

_FOLDER = click.Path(exists=True, file_okay=False)


class FiniteFloat(click.ParamType):
    """A float that is a number: NaN and the infinities are refused (a NaN threshold makes
    every review irrelevant and every metric 0, and JSON cannot hold it)."""

    name = "number"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


@click.command("train")
@click.option("--manifest", type=_FOLDER, help="Output folder of 'ingest'.")
@click.option("--rois", type=_FOLDER, help="Output folder of 'extract-rois', 'merge-rois' or "
                                            "'import-rois' (leave out for a text-only run).")
@click.option("--text", type=_FOLDER, help="Output folder of 'embed-text' (static vectors or "
                                            "frozen features).")
@click.option("--probes", type=_FOLDER, help="Output folder of 'probe-masks' (leave out for "
                                              "plain attention).")
@click.option("--model", type=click.Choice(sorted(MODELS)), default="sancl",
              help="Which model to train.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML with model/data/sampling/loss/train sections, merged over the model's "
                   "defaults (every setting: docs/settings.md).")
@click.option("--preset", default="auto",
              help="A column of the paper's hyperparameter tables (e.g. glove-electronics, "
                   "bert-home); auto = from the category and text mode; none = defaults.")
@click.option("--protocol", type=click.Choice(["paper", "released"]), default="paper",
              show_default=True,
              help="The training choices the paper leaves open: paper (this project's "
                   "documented defaults) or released (as the model's released code makes them; "
                   "stacks on --preset). See docs/fidelity.md.")
@click.option("--set", multiple=True, metavar="KEY=VALUE",
              help="Override one setting, e.g. --set train.epochs=5 (repeatable; wins over "
                   "--config and --preset; every key: docs/settings.md).")
@click.option("--resume", type=_FOLDER,
              help="Continue the unfinished run in this folder with its own config.yaml "
                   "(re-running the same command resumes too).")
@click.option("--device", default="auto", help="auto (GPU if there is one), cpu, cuda, cuda:1.")
@click.option("--num-workers", type=click.IntRange(min=0), default=2,
              help="DataLoader worker processes per training process.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Write the run into this folder instead of the cache.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default="cache",
              envvar="MRHP_CACHE_DIR", show_envvar=True,
              help="Cache root: runs go to CACHE_DIR/<dataset>/train/<fingerprint>/.")
@click.option("--force", is_flag=True,
              help="Train again from scratch even when the run exists (not with --resume).")
@click.option("--allow-partial", is_flag=True,
              help="Train even when the text, RoI or probe store covers only part of the "
                   "manifest (same as --set data.allow_partial=true); the summary reports the "
                   "coverage either way.")
@click.option("--seeds", default=None, metavar="LIST",
              help="One run per seed (train.seed), e.g. 1-5 or 1,2,3,4,5; in a job array each "
                   "task trains one of them. With --out, seed N goes to OUT/seed-N.")
@click.option("--dry-run", is_flag=True,
              help="Resolve the config and build the model from the stores, print the effective "
                   "config and the parameters per submodule, and write nothing.")
@click.option("--seed-index", type=click.IntRange(min=0), default=None,
              help="Train only the seed at this position of --seeds (default: "
                   "SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX; outside an array, all).")
def train(**options):
    """Train a ranking model on cached features; prints the run folder (one per seed).

    The run folder holds config.yaml, input-files.json, model.txt, checkpoints/, metrics.json,
    predictions-{dev,test}.jsonl, curves.png, scores.png, failures.jsonl and MANIFEST.json.
    Under torchrun each process trains on its share of the batches.

    Every input folder is checked against the file sizes and SHA-256 digests its stage
    recorded, and a resumed run against the digests it started from. A digest reads the
    whole file once (1.2-1.6 GB/s measured: 1.2-1.6 minutes for an Amazon-Home RoI store of
    ~118 GB); a file already checked and unchanged since is not read again. Environment
    MRHP_VERIFY=size checks the sizes only.

    Example: mrhp-prep train --manifest M --rois R --text T --probes P --set train.epochs=10
    """
    from .settings.option_conflicts import check_resume_options
    from .run import train as run_train

    if options["resume"] and options["seeds"] is not None:
        raise click.UsageError("--seeds makes new runs; resume one with --resume RUN_DIR alone")
    if options["seed_index"] is not None and options["seeds"] is None:
        raise click.UsageError("--seed-index picks one seed of --seeds: pass --seeds too (or "
                               "--set train.seed=N for a single run)")
    if options["resume"]:
        check_resume_options(options["resume"], given_options(
            click.get_current_context(),
            ("model", "manifest", "rois", "text", "probes", "config_file", "preset", "protocol",
             "set", "allow_partial", "force")))
    # "--set" arrives as the parameter "set" (the name pipelines use too)
    overrides = list(options.pop("set"))
    if options.pop("allow_partial"):
        overrides.append("data.allow_partial=true")
    seeds, seed_index = options.pop("seeds"), options.pop("seed_index")
    if options.pop("dry_run"):
        return _dry_run(options, overrides, seeds)
    if seeds is None:
        return _report_train(run_train(overrides=overrides, **options))
    from .loop.seeds import job_seeds, parse_seeds

    out, paths = options.pop("out"), []
    chosen = job_seeds(parse_seeds(seeds), seed_index)
    for seed in chosen:
        result = run_train(overrides=[*overrides, f"train.seed={seed}"],
                           out=os.path.join(out, f"seed-{seed}") if out else None,
                           keep_process_group=seed != chosen[-1], **options)
        paths.append(_report_train(result))
    return paths[-1]


def _dry_run(options: dict, overrides: list[str], seeds: str | None) -> None:
    """Print what `train` would build (the first seed's config with --seeds); writes nothing."""
    from .dry_run import dry_run

    if seeds is not None:
        from .loop.seeds import parse_seeds

        overrides = [*overrides, f"train.seed={parse_seeds(seeds)[0]}"]
    click.echo(dry_run(manifest=options["manifest"], rois=options["rois"], text=options["text"],
                       probes=options["probes"], model=options["model"],
                       config_file=options["config_file"], preset=options["preset"],
                       protocol=options["protocol"], overrides=overrides,
                       resume=options["resume"]), nl=False)


def given_options(ctx: click.Context, names) -> dict:
    """The options among `names` that the user passed (command line or environment)."""
    from click.core import ParameterSource

    passed = {ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT}
    return {name: ctx.params.get(name) for name in names
            if ctx.get_parameter_source(name) in passed}


def _report_train(result) -> str:
    """Print a finished run's summary (on rank 0); returns its folder."""
    if int(os.environ.get("RANK", "0")) != 0:
        return str(result.path)
    metrics = result.metrics
    rows = {"model": metrics.get("model"), "seed": result_seed(result.path),
            "epochs": f"{metrics.get('epochs_run')} (best {metrics.get('best_epoch')}"
                      f"{', stopped early' if metrics.get('stopped_early') else ''})"}
    for split in ("dev", "test"):
        if split in metrics:
            m = metrics[split]
            rows[split] = (f"MAP {100 * m['map']:.2f}  N@3 {100 * m['ndcg@3']:.2f}  "
                           f"N@5 {100 * m['ndcg@5']:.2f}  MRR {100 * m['mrr']:.2f}  "
                           f"({m['products']} products)")
    for store, share in (result.counts or {}).get("coverage", {}).items():
        rows[f"{store} coverage"] = (f"{share['covered']} of {share['needed']} {share['unit']}"
                                     f" ({100 * share['share']:.1f}%)"
                                     + (f", {share['listed']} listed as failed"
                                        if share["listed"] else "")
                                     + (f", {share['missing']} missing" if share["missing"]
                                        else ""))
    if result.counts:
        left_out = result.counts.get("reviews_left_out", 0)
        rows["reviews left out"] = f"{left_out} (see failures.jsonl)"
    if result.reused:
        rows["note"] = "reused the finished run (pass --force to train again)"
    report("train finished", rows, result.path)
    return str(result.path)


def result_seed(path) -> int | None:
    """train.seed of the run in `path` (from its config.yaml)."""
    from .run_folder import read_run_config

    return read_run_config(path, complete=True)["train"].get("seed")


@click.command("evaluate")
@click.argument("predictions", type=click.Path(exists=True, dir_okay=False))
@click.option("--threshold", type=FiniteFloat(), default=1.0,
              help="A review is relevant when its label is above this: 1 for Amazon-MRHP, "
                   "0 for Lazada-MRHP.")
@click.option("--compare", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A second predictions file: adds its metrics and a paired t-test over the "
                   "products both rank.")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Also write the JSON to this file.")
def evaluate(predictions, threshold, compare, output):
    """MAP, NDCG@3, NDCG@5 and MRR of PREDICTIONS, printed as JSON.

    PREDICTIONS is JSON lines, CSV or Parquet with product_id, review_id, label and score
    columns. Metrics are computed per product (ties keep the file's order) and averaged.

    Example: mrhp-prep evaluate runs/x/predictions-test.jsonl --threshold 1
    """
    from ..atomic import write_json_atomic
    from .report.metrics import evaluate_rankings, paired_t_test, require_common_products
    from .report.predictions import read_predictions

    first = evaluate_rankings(read_predictions(predictions), threshold)
    result = first.summary()
    if compare:
        second = evaluate_rankings(read_predictions(compare), threshold)
        require_common_products(first, second, predictions, compare)
        result = {"a": first.summary(), "b": second.summary(),
                  "t_test": paired_t_test(first, second)}
    text = json.dumps(result, indent=2)
    if output:
        write_json_atomic(output, result, allow_nan=False)
    click.echo(text)
    return output or predictions


@click.command("predict")
@click.option("--run", "run_dir", type=_FOLDER, required=True,
              help="A finished (or resumable) run folder of 'train'.")
@click.option("--product", "products", multiple=True,
              help="A product id whose reviews to rank (repeatable; not with --split).")
@click.option("--split", type=click.Choice(["train", "dev", "test"]), default=None,
              help="Rank the reviews of every product of this split (not with --product).")
@click.option("--manifest", type=_FOLDER, help="Manifest of the products (default: the run's).")
@click.option("--text", type=_FOLDER, help="embed-text output for them (default: the run's).")
@click.option("--rois", type=_FOLDER, help="extract-rois (merge-rois, import-rois) output for "
                                            "them (default: the run's).")
@click.option("--probes", type=_FOLDER, help="probe-masks output (default: the run's).")
@click.option("--checkpoint", default="best", help="best, last or epoch-NNN.")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="JSON lines file to write (default: RUN/predict-<dataset>.jsonl).")
@click.option("--device", default="auto", help="auto, cpu, cuda, cuda:1.")
@click.option("--allow-partial", is_flag=True,
              help="Rank even when the text, RoI or probe store covers only part of the chosen "
                   "reviews and their images (as train's --allow-partial); the summary reports "
                   "the coverage either way.")
def predict(run_dir, products, split, manifest, text, rois, probes, checkpoint, output, device,
            allow_partial):
    """Score and rank reviews with a trained model, also of products never seen in training.

    For new products, ingest them and run embed-text / extract-rois / probe-masks on that
    manifest, then pass those folders. Writes product_id, review_id, label, score, rank.
    The folders are checked as train checks them (MRHP_VERIFY=size: sizes only).

    Example: mrhp-prep predict --run RUN --manifest NEW --text NEW_TEXT --rois NEW_ROIS
    --probes NEW_PROBES --product B00X1
    """
    from .settings.option_conflicts import check_predict_selection
    from .run import predict as run_predict

    check_predict_selection(products, split)
    path, summary = run_predict(run_dir, manifest=manifest, text=text, rois=rois, probes=probes,
                                products=list(products) or None, split=split,
                                checkpoint=checkpoint, output=output, device=device,
                                allow_partial=allow_partial)
    report("predict finished", summary, path)
    return str(path)
