"""Click commands of the views: show-rois, show-probes and report (thin shells over the
library modules beside this one)."""

from __future__ import annotations

import click

from ..cli_options import config_option
from ..stage_summary import report

_FOLDER = click.Path(exists=True, file_okay=False)


@click.command("show-rois")
@click.option("--rois", required=True, type=click.Path(exists=True),
              help="An extract-rois, merge-rois or import-rois output folder, or its rois.h5.")
@click.option("--image-id", "image_ids", multiple=True,
              help="An image id, e.g. B00SAMP001/pic_0.jpg (repeatable).")
@click.option("--product", "products", multiple=True,
              help="Every photo of this product (repeatable; needs the manifest).")
@click.option("--review", "reviews", multiple=True,
              help="Every photo of this review (repeatable; needs the manifest).")
@click.option("--manifest", type=_FOLDER, default=None,
              help="The ingest output the store was made from [default: the one the store "
                   "records].")
@click.option("--images-root", type=_FOLDER, default=None,
              help="The folder the images were extracted from [default: the one the store "
                   "records].")
@click.option("--top", type=click.IntRange(min=1), default=10,
              help="Draw this many regions, the most confident first.")
@click.option("--names", "naming",
              type=click.Choice(["auto", "visual-genome", "coco", "ids"]), default="auto",
              help="Class names: auto = Visual Genome for a butd-r101 checkpoint, COCO for "
                   "frcnn-r50-fpn-v2, numeric ids for --weights random and imported stores.")
@click.option("--max-side", type=click.IntRange(min=0), default=1200,
              help="Shrink larger pictures to this many pixels on the long side (0: keep).")
@click.option("--out", type=click.Path(), default=None,
              help="A .png file (one image) or a folder [default: the current folder, one "
                   "ID-rois.png per image].")
@config_option
def show_rois(rois, image_ids, products, reviews, manifest, images_root, top, naming,
              max_side, out):
    """Draw an image's stored regions on the photograph: one PNG per image, each box
    labelled with its attribute, object and confidence.

    Example: mrhp-prep show-rois --rois cache/sample/extract-rois/<fp>
    --image-id B00SAMP007/pic_0.jpg --out pic.png
    """
    from .show_rois import show_rois as run_show

    if not (image_ids or products or reviews):
        raise click.UsageError("say which images: --image-id, --product or --review")
    result = run_show(rois, image_ids=image_ids, products=products, reviews=reviews,
                      manifest=manifest, images_root=images_root, top=top, out=out,
                      naming=naming, max_side=max_side or None)
    rows = {"images drawn": len(result.written),
            "class names": f"{result.names.source} ({result.names.reason})"}
    for failure in result.failures:
        rows[f"not drawn: {failure['image_id']}"] = f"{failure['reason']}: {failure['detail']}"
    report("show-rois finished", rows, result.output)
    return str(result.output)


@click.command("report")
@click.argument("run_dir", metavar="RUN", type=_FOLDER)
@click.option("--split", type=click.Choice(["test", "dev"]), default="test",
              help="The split whose products the browser shows.")
@click.option("--max-products", type=click.IntRange(min=0), default=50,
              help="Products in the browser, the worst-ranked first.")
@click.option("--max-reviews", type=click.IntRange(min=1), default=50,
              help="Reviews shown per product, in the model's order.")
@click.option("--max-thumbnails", type=click.IntRange(min=0), default=200,
              help="Photos embedded in the page (about 5-10 KB each).")
@click.option("--top-regions", type=click.IntRange(min=0), default=5,
              help="Regions drawn on each thumbnail, the most confident first.")
@click.option("--thumbnail-size", type=click.IntRange(min=32), default=160,
              help="Long side of a thumbnail in pixels.")
@click.option("--images-root", type=_FOLDER, default=None,
              help="Where the photos are [default: the folder the run's RoI store records].")
@click.option("--names", "naming",
              type=click.Choice(["auto", "visual-genome", "coco", "ids"]), default="auto",
              help="Region labels (see show-rois --help).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write here instead of RUN/report.html.")
@config_option
def report_command(run_dir, split, max_products, max_reviews, max_thumbnails, top_regions,
                   thumbnail_size, images_root, naming, out):
    """Write RUN/report.html: one self-contained page (no script, nothing fetched) with the
    run's config, metrics beside the paper's, curves, and the test products worst-ranked
    first with their reviews in predicted order, probe sentences and photo regions.

    Example: mrhp-prep report cache/sample/train/<fp>
    """
    from .report import ReportSettings, write_report

    settings = ReportSettings(split=split, max_products=max_products, max_reviews=max_reviews,
                              max_thumbnails=max_thumbnails, top_regions=top_regions,
                              thumbnail_size=thumbnail_size, images_root=images_root,
                              naming=naming)
    result = write_report(run_dir, settings, out)
    rows = {"products": f"{result.products_shown} of {result.products_total} shown",
            "thumbnails": result.thumbnails,
            "size": f"{result.size_bytes / 1024:.0f} KB",
            "seconds": f"{result.seconds:.1f}"}
    for what, count in result.left_out.items():
        rows[f"left out: {what}"] = count
    report("report finished", rows, result.path)
    return str(result.path)


@click.command("show-probes")
@click.option("--probes", required=True, type=_FOLDER, help="A probe-masks output folder.")
@click.option("--manifest", type=_FOLDER, default=None,
              help="The ingest output the masks were made from [default: the one the "
                   "probe-masks run records].")
@click.option("--product", "products", multiple=True,
              help="Show this product (repeatable) [default: every product, in manifest order].")
@click.option("--split", type=click.Choice(["train", "dev", "test"]), default=None,
              help="Only the products of this split.")
@click.option("--max-products", type=click.IntRange(min=0), default=50,
              help="Products on the page.")
@click.option("--max-reviews", type=click.IntRange(min=1), default=50,
              help="Reviews shown per product.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write here instead of PROBES/probes.html.")
@config_option
def show_probes(probes, manifest, products, split, max_products, max_reviews, out):
    """Write one self-contained HTML page with the probe masks highlighted in the review
    texts, to check them before training (no run needed).

    Example: mrhp-prep show-probes --probes cache/sample/probe-masks/<fp> --split test
    """
    from .probes_page import ProbesPageSettings, write_probes_page

    settings = ProbesPageSettings(products=products, split=split, max_products=max_products,
                                  max_reviews=max_reviews)
    result = write_probes_page(probes, manifest, settings, out)
    rows = {"products": f"{result.products_shown} of {result.products_total} shown",
            **result.summary,
            "seconds": f"{result.seconds:.1f}"}
    for what, count in result.left_out.items():
        rows[f"left out: {what}"] = count
    report("show-probes finished", rows, result.path)
    return str(result.path)
