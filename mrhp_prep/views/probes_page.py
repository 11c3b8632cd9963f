"""`show-probes`: the probe masks of a probe-masks output highlighted in the review texts, on
one self-contained HTML page, to check the masks before training on them."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..atomic import atomic_path
from ..cache import read_manifest, recorded_input
from ..data.manifest import Manifest
from ..errors import InputError
from .highlight import ProbeMasks, highlighted
from .html_page import esc, note, page, table

log = logging.getLogger(__name__)

PAGE_NAME = "probes.html"


@dataclass
class ProbesPageSettings:
    products: Sequence[str] = ()
    split: str | None = None
    max_products: int = 50
    max_reviews: int = 50


@dataclass
class ProbesPageResult:
    path: Path
    products_shown: int
    products_total: int
    summary: dict
    seconds: float
    left_out: dict[str, int] = field(default_factory=dict)


def _chosen_products(manifest: Manifest, settings: ProbesPageSettings) -> pd.DataFrame:
    products = manifest.products
    if settings.products:
        unknown = [p for p in settings.products if not (products["product_id"] == p).any()]
        if unknown:
            raise InputError(f"product {unknown[0]!r} is not in the manifest",
                             file=str(manifest.table_path("products")),
                             hint="check the id, or pass the --manifest it belongs to")
        order = {p: i for i, p in enumerate(dict.fromkeys(settings.products))}
        chosen = products[products["product_id"].isin(order)]
        return chosen.sort_values("product_id", key=lambda s: s.map(order))
    if settings.split:
        return products[products["split"] == settings.split]
    return products


def _summary(reviews: pd.DataFrame, probes: ProbeMasks) -> dict:
    """Counts over every review of the chosen products (shown or not)."""
    with_record = marked = marked_chars = chars = 0
    for review_id, text in zip(reviews["review_id"], reviews["text"]):
        spans = probes.spans(review_id)
        chars += len(text)
        if spans is None:
            continue
        with_record += 1
        if spans:
            marked += 1
            marked_chars += sum(max(0, min(e, len(text)) - max(s, 0)) for s, e in spans)
    return {"reviews": len(reviews), "with a probe record": with_record,
            "without a probe record": len(reviews) - with_record,
            "with a marked sentence": marked,
            "share of characters marked": f"{100 * marked_chars / chars:.1f}%" if chars else "–"}


def write_probes_page(probes: str | Path, manifest: str | Path | None = None,
                      settings: ProbesPageSettings | None = None,
                      out: str | Path | None = None) -> ProbesPageResult:
    """Write the page (to PROBES/probes.html by default). The manifest defaults to the one
    the probe-masks run recorded."""
    settings = settings or ProbesPageSettings()
    started = time.perf_counter()
    masks = ProbeMasks(probes)
    manifest_path = manifest or recorded_input(masks.folder, "manifest")
    if manifest_path is None:
        raise InputError("the probe-masks output does not record its manifest",
                         file=str(masks.folder), hint="pass --manifest (the ingest output)")
    loaded = Manifest(manifest_path)
    products = _chosen_products(loaded, settings)
    reviews = loaded.reviews[loaded.reviews["product_id"].isin(products["product_id"])]
    summary = _summary(reviews, masks)
    by_product = {pid: rows for pid, rows in reviews.groupby("product_id", sort=False)}
    shown = products.head(settings.max_products)
    left_out = {}
    if len(products) > len(shown):
        left_out["products (over --max-products)"] = len(products) - len(shown)
    sections, reviews_cut = [], 0
    for position, product in enumerate(shown.to_dict("records"), start=1):
        rows = by_product.get(product["product_id"], reviews.iloc[:0])
        reviews_cut += max(len(rows) - settings.max_reviews, 0)
        sections.append(_product(position, product, rows.head(settings.max_reviews), masks,
                                 len(rows)))
    if reviews_cut:
        left_out["reviews of shown products (over --max-reviews)"] = reviews_cut
    info = read_manifest(masks.folder)
    body = "\n".join([
        "<h1>Probe masks</h1>",
        (f"<p><code>{esc(masks.folder.resolve())}</code> over the manifest "
         f"<code>{esc(loaded.path.resolve())}</code></p>"),
        ("<p>Highlighted: the sentences the mask marks (character offsets into the manifest's "
         "text). Products in manifest order"
         + (f", split {esc(settings.split)}" if settings.split else "") + ".</p>"),
        "<h2>Summary</h2>" + table(["", "count"], list(summary.items()), numeric=[1]),
        "<h2>Settings of the probe-masks run</h2>"
        + table(["setting", "value"], sorted((info.get("settings") or {}).items())),
        f"<h2 id=\"products\">Products ({len(shown)} of {len(products)} shown)</h2>",
        *sections,
        "<h2 id=\"left-out\">Left out</h2>"
        + (table(["what", "count"], list(left_out.items()), numeric=[1]) if left_out
           else "<p>Nothing was left out.</p>")])
    if summary["without a probe record"]:
        body = note(esc(f"{summary['without a probe record']} reviews have no probe-mask "
                        "record (listed in the probe-masks run's failures.jsonl, or the "
                        "store covers another manifest).")) + body
    target = Path(out) if out is not None else masks.folder / PAGE_NAME
    with atomic_path(target) as tmp:
        tmp.write_text(page("mrhp-prep probe masks", body), encoding="utf-8")
    seconds = time.perf_counter() - started
    log.info("show-probes: %d of %d products in %.1f s -> %s", len(shown), len(products),
             seconds, target)
    return ProbesPageResult(target, len(shown), len(products), summary, seconds, left_out)


def _product(position: int, product: dict, reviews: pd.DataFrame, masks: ProbeMasks,
             total: int) -> str:
    parts = []
    for review in reviews.to_dict("records"):
        spans = masks.spans(review["review_id"])
        status = ("no probe record" if spans is None else
                  f"{len(spans)} marked sentence{'s' if len(spans) != 1 else ''}")
        parts.append(f"<div class=\"review\" data-review-id=\"{esc(review['review_id'])}\">"
                     f"<div class=\"body\"><div class=\"muted\"><code>"
                     f"{esc(review['review_id'])}</code> · {esc(status)}</div>"
                     f"<div class=\"text\">{highlighted(review['text'], spans)}</div></div></div>")
    if total > len(reviews):
        parts.append(f"<p class=\"muted\">{total - len(reviews)} more reviews left out.</p>")
    return (f"<section class=\"product\" data-product-id=\"{esc(product['product_id'])}\">"
            f"<h3>{position}. {esc(product['name'])} <span class=\"muted\"><code>"
            f"{esc(product['product_id'])}</code> · {esc(product['split'])}</span></h3>"
            f"<p class=\"product-text\">{esc(product['text'])}</p>{''.join(parts)}</section>")
