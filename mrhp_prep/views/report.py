"""`report RUN`: one self-contained `report.html` of a finished training run.

The page holds the run's config and metrics (beside the paper's row where `compare --paper`
has one), its training curves and score plots, the spread of per-product metrics, and a
product browser over the test split, worst-ranked first (see `product_browser.py`), with
the probe-mask sentences highlighted and the photos' top regions drawn. Products, reviews
and thumbnails are capped; what was left out is said at the end of the page.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_path
from ..cache import read_manifest
from ..data.manifest import Manifest
from ..errors import InputError
from ..vision.store import RoiStore
from .class_names import names_for_store
from .draw import data_uri
from .highlight import ProbeMasks
from .html_page import esc, note, page, percent, table
from .plots import per_product_histogram
from .product_browser import WORST_FIRST_TEXT, BrowserInputs, ProductBrowser, worst_first
from .sources import ImageFiles, store_inputs
from .thumbnails import Thumbnails

log = logging.getLogger(__name__)

REPORT_NAME = "report.html"
METRIC_COLUMNS = (("map", "MAP"), ("ndcg@3", "NDCG@3"), ("ndcg@5", "NDCG@5"), ("mrr", "MRR"))


@dataclass
class ReportSettings:
    split: str = "test"
    max_products: int = 50
    max_reviews: int = 50
    max_thumbnails: int = 200
    top_regions: int = 5
    thumbnail_size: int = 160
    images_root: str | Path | None = None
    naming: str = "auto"


@dataclass
class ReportResult:
    path: Path
    products_shown: int
    products_total: int
    thumbnails: int
    size_bytes: int
    seconds: float
    left_out: dict[str, int] = field(default_factory=dict)


def finished_run(run_dir: str | Path) -> Path:
    """The run folder, refused unless `train` finished it."""
    run_dir = Path(run_dir)
    try:
        read_manifest(run_dir, stage="train")
    except InputError as exc:
        raise InputError(f"{run_dir} is not a finished training run: {exc.args[0]}",
                         file=str(run_dir),
                         hint="pass the folder 'mrhp-prep train' printed once it finished; "
                              "an interrupted run resumes when its train command is run "
                              "again") from None
    return run_dir


def _optional(kind: str, path: str | None, opener, notes: list[str]):
    """opener(path), or None with a note saying why the page does without it."""
    if not path:
        return None
    try:
        return opener(path)
    except (InputError, OSError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        notes.append(f"The run's {kind} ({path}) cannot be read ({message}); the page does "
                     "without it.")
        return None


def write_report(run_dir: str | Path, settings: ReportSettings | None = None,
                 out: str | Path | None = None) -> ReportResult:
    """Write the report of the finished run in `run_dir` (to RUN/report.html by default)."""
    settings = settings or ReportSettings()
    from ..train.report.compare import load_run
    from ..train.run_folder import predictions_path

    started = time.perf_counter()
    run_dir = finished_run(run_dir)
    run = load_run(run_dir, settings.split)     # config, metrics and predictions, checked
    config, metrics, predictions = run.config, run.metrics, run.predictions
    inputs = config["inputs"]
    predictions_file = predictions_path(run_dir, settings.split)
    ordered = worst_first(run.report.per_product)

    notes: list[str] = []
    manifest = _optional("manifest", inputs.get("manifest"), Manifest, notes)
    probes = _optional("probe masks", inputs.get("probes"), ProbeMasks, notes)
    store = _optional("RoI store", inputs.get("rois"), RoiStore, notes)
    if not inputs.get("probes"):
        notes.append("The run was trained without probe masks: no sentence is highlighted.")
    names = (names_for_store(store.attrs, store.format_version, settings.naming)
             if store is not None else None)
    root = settings.images_root or (store_inputs(inputs["rois"]).images_root
                                    if inputs.get("rois") else None)
    if not inputs.get("rois"):
        notes.append("The run was trained without region features (text-only): photos are "
                     "shown without regions, and only with --images-root.")
    elif root is None:
        notes.append("No images root is known (the RoI store does not record one): photos are "
                     "left out. Pass --images-root to show them.")
    thumbnails = Thumbnails(ImageFiles(root, manifest), store, names, settings.max_thumbnails,
                            settings.top_regions, settings.thumbnail_size)
    browser = ProductBrowser(BrowserInputs(predictions, run.report.threshold, manifest, probes,
                                           thumbnails, settings.max_products,
                                           settings.max_reviews))
    try:
        toc, products = browser.html(ordered)
        body = "\n".join([
            _header(run_dir, config, metrics, run.describe, settings),
            _notes(notes),
            _metrics_section(metrics, run.describe),
            _config_section(config, inputs, names, root),
            _plots_section(run_dir, run.report.per_product, settings.split, predictions_file),
            _browser_intro(settings, browser.counts.products_shown, len(ordered)),
            toc, products])
        left_out = _left_out(browser, thumbnails)
        body += "\n" + _left_out_section(left_out, thumbnails, settings)
    finally:
        if store is not None:
            store.close()
    html = page(f"mrhp-prep report: {run_dir.name}", body)
    target = Path(out) if out is not None else run_dir / REPORT_NAME
    with atomic_path(target) as tmp:
        tmp.write_text(html, encoding="utf-8")
    seconds = time.perf_counter() - started
    log.info("report: %d of %d products, %d thumbnails, %.1f KB in %.1f s -> %s",
             browser.counts.products_shown, len(ordered), thumbnails.made,
             len(html.encode()) / 1024, seconds, target)
    return ReportResult(target, browser.counts.products_shown, len(ordered), thumbnails.made,
                        target.stat().st_size, seconds, left_out)


def _header(run_dir: Path, config: dict, metrics: dict, describe: dict,
            settings: ReportSettings) -> str:
    model = config.get("model", {}).get("name", "?")
    facts = [f"model <b>{esc(model)}</b>", f"seed {esc(config.get('train', {}).get('seed'))}",
             f"dataset {esc(describe.get('dataset'))} / {esc(describe.get('category'))}",
             f"{esc(describe.get('setting'))}, text {esc(describe.get('text'))}",
             f"best epoch {esc(metrics.get('best_epoch'))} of {esc(metrics.get('epochs_run'))}"
             + (" (stopped early)" if metrics.get("stopped_early") else "")]
    return (f"<h1>Training run report</h1><p><code>{esc(run_dir.resolve())}</code></p>"
            f"<p>{' · '.join(facts)}</p><p class=\"muted\">Made by mrhp-prep report; "
            f"split shown: {esc(settings.split)}.</p>")


def _browser_intro(settings: ReportSettings, shown: int, total: int) -> str:
    return (f"<h2 id=\"products\">{esc(settings.split.capitalize())} products, "
            f"{esc(WORST_FIRST_TEXT)}</h2><p>{shown} of {total} products shown. Reviews are in "
            "the model's order (highest score first; equal scores keep the predictions file's "
            "order, as the metrics rank them). Highlighted: the sentences the probe mask marks. "
            f"Thumbnails: the photo's {settings.top_regions} most confident regions, numbered "
            "as listed below each.</p>")


def _notes(notes: list[str]) -> str:
    return "".join(note(esc(text)) for text in notes)


def _metrics_section(metrics: dict, describe: dict) -> str:
    from ..train.report.papers import PAPERS, paper_row

    rows = []
    for split in ("dev", "test"):
        if split in metrics:
            m = metrics[split]
            rows.append([f"ours, {split}", *(percent(m.get(k)) for k, _ in METRIC_COLUMNS),
                         m.get("products", ""), m.get("reviews", "")])
    model = describe.get("model")
    found = None
    if model in PAPERS and describe.get("variant"):
        found = paper_row(model, dataset=describe["dataset"], category=describe["category"],
                          setting=describe["setting"], text=describe["text"],
                          variant=describe["variant"])
    if found:
        rows.append([f"{model} paper, {found['table']} ({found['variant']}), test",
                     *(f"{found[k]:.2f}" if k in found else "–" for k, _ in METRIC_COLUMNS),
                     "", ""])
        paper_text = ("The paper's row is the one <code>mrhp-prep compare --paper "
                      f"{esc(model)}</code> sets beside this configuration.")
    else:
        paper_text = ("No paper reports this configuration (" + esc(", ".join(
            f"{k} {describe.get(k)}" for k in ("model", "dataset", "category", "setting",
                                               "text", "variant"))) + ").")
    header = ["", *(label + " (%)" for _, label in METRIC_COLUMNS), "products", "reviews"]
    return (f"<h2 id=\"metrics\">Metrics</h2>{table(header, rows, numeric=range(1, 7))}"
            f"<p class=\"muted\">{paper_text}</p>")


def _config_section(config: dict, inputs: dict, names, root) -> str:
    from ..train.settings.config import flatten

    model = config.get("model", {})
    train = config.get("train", {})
    summary = [("model", model.get("name")), ("preset", config.get("preset")),
               ("text encoder", model.get("text_encoder")), ("epochs", train.get("epochs")),
               ("batch size", train.get("batch_size")), ("learning rate", train.get("lr")),
               ("monitor", train.get("monitor")), ("seed", train.get("seed"))]
    summary += [(f"input: {role}", path or "–") for role, path in inputs.items()]
    summary.append(("images root", root or "–"))
    if names is not None:
        summary.append(("region labels", f"{names.source} ({names.reason})"))
    everything = [(key, value) for key, value in flatten({k: v for k, v in config.items()
                                                          if k != "inputs"})]
    return (f"<h2 id=\"config\">Config</h2>{table(['setting', 'value'], summary)}"
            f"<details><summary>The whole config.yaml ({len(everything)} settings)</summary>"
            f"{table(['setting', 'value'], everything)}</details>")


def _plots_section(run_dir: Path, per_product, split: str, predictions_file: Path) -> str:
    figures = []
    from ..train.run_folder import CURVES_NAME, SCORES_NAME

    for name, what in ((CURVES_NAME, "training losses and dev metrics per epoch"),
                       (SCORES_NAME, "predicted scores per gold label")):
        path = run_dir / name
        if path.is_file():
            figures.append(_figure(path.read_bytes(), f"{name}: {what}"))
        else:
            figures.append(f"<p class=\"muted\">The run has no {esc(name)}.</p>")
    histogram = per_product_histogram(per_product, split, str(predictions_file))
    figures.append(_figure(histogram, f"how the {split} products' metrics are spread"))
    return ("<h2 id=\"plots\">Training curves and score distributions</h2>"
            f"<div class=\"plots\">{''.join(figures)}</div>")


def _figure(png: bytes, caption: str) -> str:
    return (f"<figure><img src=\"{data_uri(png, 'image/png')}\" alt=\"{esc(caption)}\">"
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def _left_out(browser: ProductBrowser, thumbnails: Thumbnails) -> dict[str, int]:
    counts = browser.counts
    left = {}
    if counts.products_left_out:
        left["products (over --max-products)"] = counts.products_left_out
    if counts.reviews_left_out:
        left["reviews of shown products (over --max-reviews)"] = counts.reviews_left_out
    left.update(counts.missing)
    left.update({f"photos: {reason}": n for reason, n in thumbnails.left_out.items()})
    return left


def _left_out_section(left_out: dict[str, int], thumbnails: Thumbnails,
                      settings: ReportSettings) -> str:
    caps = (f"Caps: --max-products {settings.max_products}, --max-reviews "
            f"{settings.max_reviews}, --max-thumbnails {settings.max_thumbnails}; "
            f"{thumbnails.made} thumbnails embedded ({thumbnails.bytes / 1024:.0f} KB).")
    if not left_out:
        return f"<h2 id=\"left-out\">Left out</h2><p>Nothing was left out. {esc(caps)}</p>"
    rows = [(what, count) for what, count in left_out.items()]
    examples = "".join(f"<li>{esc(reason)}: {esc('; '.join(items))}</li>"
                       for reason, items in thumbnails.examples.items())
    return (f"<h2 id=\"left-out\">Left out</h2><p>{esc(caps)}</p>"
            f"{table(['what', 'count'], rows, numeric=[1])}"
            + (f"<p class=\"muted\">Examples:</p><ul>{examples}</ul>" if examples else ""))
