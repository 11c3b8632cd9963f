"""The product browser of a run report: products worst-ranked first, each with its text and
photos and its reviews in the order the model ranked them.

"Worst" is defined once, here: the lowest NDCG@3 first, then the lowest MAP, then the
product id (so the order is total and the same on every run of the report).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..data.manifest import Manifest
from ..train.report.metrics import ranking_order
from .highlight import ProbeMasks, highlighted
from .html_page import esc, percent
from .thumbnails import Thumbnails

WORST_FIRST = ("ndcg@3", "map", "product_id")
WORST_FIRST_TEXT = ("worst-ranked first: lowest NDCG@3 first, ties broken by the lowest MAP, "
                    "then by product id")


def worst_first(per_product: pd.DataFrame) -> pd.DataFrame:
    """Per-product metrics (RankingReport.per_product) in the browser's order."""
    return per_product.sort_values(list(WORST_FIRST), kind="stable").reset_index(drop=True)


@dataclass
class BrowserInputs:
    """What the browser draws on; any of manifest, probes, thumbnails may be missing."""

    predictions: pd.DataFrame          # product_id, review_id, label, score (file order)
    threshold: float
    manifest: Manifest | None
    probes: ProbeMasks | None
    thumbnails: Thumbnails
    max_products: int
    max_reviews: int


@dataclass
class BrowserCounts:
    products_shown: int = 0
    products_left_out: int = 0
    reviews_shown: int = 0
    reviews_left_out: int = 0
    missing: Counter = field(default_factory=Counter)   # what the manifest or probes lack


class ProductBrowser:
    def __init__(self, inputs: BrowserInputs):
        self.inputs = inputs
        self.counts = BrowserCounts()
        manifest = inputs.manifest
        if manifest is not None:
            self.products = manifest.products.set_index("product_id")
            self.reviews = manifest.reviews.set_index("review_id")
            # one pass over the image table: a groupby would build a frame per item (tens
            # of thousands at Amazon scale) where only the shown ones are needed
            images = manifest.images.sort_values(["role", "item_id", "k"], kind="stable")
            self.photos: dict[tuple[str, str], list[str]] = {}
            for role, item, image_id in zip(images["role"], images["item_id"],
                                            images["image_id"]):
                self.photos.setdefault((role, item), []).append(image_id)
        else:
            self.products = self.reviews = None
            self.photos = {}
        self.rows_of = inputs.predictions.groupby("product_id", sort=False).indices

    def html(self, ordered: pd.DataFrame) -> tuple[str, str]:
        """(table of contents, product sections) for the products of `ordered` (worst first),
        up to the cap."""
        shown = ordered.head(self.inputs.max_products)
        self.counts.products_left_out = len(ordered) - len(shown)
        toc, sections = [], []
        for position, row in enumerate(shown.to_dict("records"), start=1):
            anchor = f"p{position}"
            toc.append(f"<li><a href=\"#{anchor}\">{esc(row['product_id'])}</a> "
                       f"<span class=\"muted\">NDCG@3 {percent(row['ndcg@3'])} · "
                       f"MAP {percent(row['map'])}</span></li>")
            sections.append(self._product(anchor, position, row))
        self.counts.products_shown = len(shown)
        return f"<ol class=\"toc\">{''.join(toc)}</ol>", "\n".join(sections)

    def _photos(self, role: str, item_id: str) -> str:
        figures = [self.inputs.thumbnails.figure(i) for i in self.photos.get((role, item_id), [])]
        figures = [f for f in figures if f]
        return f"<div class=\"photos\">{''.join(figures)}</div>" if figures else ""

    def _product(self, anchor: str, position: int, metrics: dict) -> str:
        product_id = metrics["product_id"]
        name, text = "", ""
        if self.products is not None:
            if product_id in self.products.index:
                name = str(self.products.at[product_id, "name"])
                text = str(self.products.at[product_id, "text"])
            else:
                self.counts.missing["products not in the manifest"] += 1
        scores = (f"NDCG@3 {percent(metrics['ndcg@3'])} · MAP {percent(metrics['map'])} · "
                  f"NDCG@5 {percent(metrics['ndcg@5'])} · MRR {percent(metrics['mrr'])} · "
                  f"{metrics['reviews']} reviews, {metrics['relevant']} relevant")
        head = (f"<div class=\"product-head\">{self._photos('prd', product_id)}<div>"
                f"<h3>{position}. {esc(name) or esc(product_id)} "
                f"<span class=\"muted\"><code>{esc(product_id)}</code></span></h3>"
                f"<p class=\"scores\">{esc(scores)}</p>"
                + (f"<p class=\"product-text\">{esc(text)}</p>" if text else "")
                + "</div></div>")
        reviews = self._reviews(self.inputs.predictions.iloc[self.rows_of[product_id]])
        return (f"<section class=\"product\" id=\"{anchor}\" data-product-id=\"{esc(product_id)}\" "
                f"data-position=\"{position}\">{head}{reviews}</section>")

    def _reviews(self, rows: pd.DataFrame) -> str:
        order = ranking_order(rows["score"].to_numpy(dtype=np.float64))
        ranked = rows.iloc[order]
        limit = self.inputs.max_reviews
        self.counts.reviews_shown += min(len(ranked), limit)
        self.counts.reviews_left_out += max(len(ranked) - limit, 0)
        parts = []
        for rank, row in enumerate(ranked.head(limit).itertuples(index=False), start=1):
            parts.append(self._review(rank, row))
        if len(ranked) > limit:
            parts.append(f"<p class=\"muted\">{len(ranked) - limit} more reviews left out "
                         f"(--max-reviews {limit}).</p>")
        return "".join(parts)

    def _review(self, rank: int, row) -> str:
        review_id = row.review_id
        text, spans = "", None
        if self.reviews is not None:
            if review_id in self.reviews.index:
                text = str(self.reviews.at[review_id, "text"])
            else:
                self.counts.missing["reviews not in the manifest"] += 1
        if self.inputs.probes is not None:
            spans = self.inputs.probes.spans(review_id)
            if spans is None:
                self.counts.missing["reviews without a probe-mask record"] += 1
        label = float(row.label)
        relevant = label > self.inputs.threshold
        label_text = f"{label:g}"
        return (f"<div class=\"review\" data-review-id=\"{esc(review_id)}\" data-rank=\"{rank}\">"
                f"<div class=\"rank\">#{rank}<br><span class=\"label "
                f"{'label-rel' if relevant else 'label-irr'}\" title=\"gold label\">"
                f"{esc(label_text)}</span></div><div class=\"body\">"
                f"<div class=\"muted\">score {float(row.score):.4f} · gold label {esc(label_text)}"
                f" ({'relevant' if relevant else 'not relevant'}) · <code>{esc(review_id)}</code>"
                f"</div><div class=\"text\">{highlighted(text, spans)}</div></div>"
                f"{self._photos('rvw', review_id)}</div>")
