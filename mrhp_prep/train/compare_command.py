"""The `mrhp-prep compare` command: options in, `compare_report.compare` out, a summary."""

from __future__ import annotations

import click

from ..errors import CommandLineError
from ..stage_summary import report
from .report.compare import SPLITS
from .report.papers import PAPERS


@click.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--split", type=click.Choice(SPLITS), default="test",
              help="Whose predictions to score: predictions-SPLIT.jsonl of each run.")
@click.option("--paper", type=click.Choice(PAPERS), default=None,
              help="Set each group beside this paper's figure for its dataset, category, "
                   "setting, text features and variant (the full model or an ablation of the "
                   "paper's tables; mrhp_prep/train/report/paper_results.yaml). Test split only: "
                   "the papers report test-set figures.")
@click.option("--out", type=click.Path(file_okay=False), default="compare",
              help="Folder for compare.csv, compare-tests.csv, compare.md and compare.png.")
def compare_command(runs, split, paper, out):
    """Group training runs by everything but the seed and compare the groups.

    RUNS are run folders of 'train' or folders holding them (searched recursively). Prints
    MAP, N@3 and N@5 as mean ± std over seeds per group, and paired t-tests between groups
    over products (each product averaged over seeds) and, with 3 or more common seeds, over
    seeds.

    Example: mrhp-prep compare cache/amazon-home/train --paper sancl --split test
    """
    if paper and split != "test":
        raise CommandLineError(f"--paper sets groups beside the paper's test-set figures; "
                               f"--split {split} would subtract them from {split} scores: "
                               f"use --split test with --paper")
    from .report.compare_report import compare, describe_apart

    path, summary, tests, unfinished, apart = compare(runs, out, split, paper)
    click.echo((path / "compare.md").read_text(encoding="utf-8"), err=True)
    rows = {"groups": len(summary), "runs": int(summary["runs"].sum()), "tests": len(tests)}
    if unfinished:
        rows["unfinished runs left out"] = ", ".join(map(str, unfinished))
    if apart:
        rows["kept apart (other manifests)"] = "; ".join(describe_apart(apart))
    report("compare finished", rows, path)
    return str(path)
