"""Click commands of the data stages: `ingest` (and the image fetcher's command)."""

from __future__ import annotations

import click

from ..cli_options import stage_options
from ..stage_summary import report


@click.command("ingest")
@click.argument("raw_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--dataset", type=click.Choice(["amazon", "lazada"]), required=True,
              help="Which release flavour: Amazon-MRHP or Lazada-MRHP.")
@click.option("--category", type=click.Choice(["clothing", "electronics", "home"]),
              required=True, help="Which category's files to read.")
@click.option("--labels", type=click.Choice(["raw", "graded"]), default="raw",
              help="raw: upvotes as stored (MCR, MCL). graded: SANCL's 0-4 grading of vote "
                   "counts, 0-vote reviews dropped.")
@click.option("--min-review-year", type=click.IntRange(min=1), default=None, metavar="YEAR",
              help="Leave out reviews dated before YEAR (their 'time'; Amazon only). SANCL's "
                   "reader keeps 2016 and later: --labels graded --min-review-year 2016.")
@click.option("--product-text", type=click.Choice(["auto", "name+description", "name"]),
              default="auto", help="Product text; auto = name + description, name only for "
                                   "Lazada clothing.")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail",
              help="fail: refuse the release on any bad row. skip: leave bad rows out and list "
                   "them in failures.jsonl.")
@click.option("--name", default=None, help="Dataset name in the cache (default DATASET-CATEGORY).")
@stage_options
def ingest(raw_dir, dataset, category, labels, min_review_year, product_text, on_error, name,
           out, cache_dir, force):
    """Read one category of the raw MRHP release (RAW_DIR) into a manifest.

    Reads {category}.{prd,rvw,rel}.{train,dev,test} and writes products.parquet,
    reviews.parquet and images.parquet.

    Example: mrhp-prep ingest data/Amazon --dataset amazon --category electronics
    """
    from .ingest import ingest as run_ingest

    run = run_ingest(raw_dir, dataset=dataset, category=category, labels=labels,
                     product_text=product_text, on_error=on_error, name=name, out=out,
                     cache_dir=cache_dir, force=force, min_review_year=min_review_year)
    info = run.manifest()
    counts = info["counts"]
    rows = {"products": counts["products"], "reviews": counts["reviews"],
            "images": counts["images"], "labels": f"{info['label_range']} ({labels})",
            "skipped rows": f"{counts['skipped_rows']} (see failures.jsonl)"}
    if min_review_year is not None:
        rows["dated before"] = (f"{min_review_year}: {counts['dropped_reviews_before_year']} "
                                "review(s) left out")
    if counts.get("cells_with_lone_surrogates"):
        rows["invalid text"] = (f"{counts['cells_with_lone_surrogates']} cell(s) held lone "
                                "UTF-16 surrogates, replaced by U+FFFD")
    if info.get("label_warning"):
        rows["warning"] = info["label_warning"]
    report("ingest finished", rows, run.path)
    return str(run.path)
