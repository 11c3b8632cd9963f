"""The files of `mrhp-prep compare`: compare.csv, compare-tests.csv, compare.md and compare.png
of groups of runs (see compare.py), optionally beside a paper's own figures."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ...atomic import atomic_path
from .compare import Group, compare_groups, find_runs, group_runs, kept_apart, load_run
from .papers import PAPER_METRICS, PAPER_SELECTION, paper_row

LABELS = {"map": "MAP", "ndcg@3": "N@3", "ndcg@5": "N@5"}


def summary_frame(groups: Sequence[Group], paper: str | None) -> pd.DataFrame:
    """One row per group: runs, seeds, the model's architecture and training protocol, mean
    and std per metric (in %), and with `paper` the paper's figure for the same dataset,
    category, setting, text and model variant (the full model or one of its ablations), how
    the paper's own figure was selected where its code shows it, and ours minus it."""
    rows = []
    for group in groups:
        describe = group.runs[0].describe
        row = {"group": group.name, "runs": len(group.runs),
               "seeds": " ".join(map(str, group.seeds)), "products": len(group.per_product),
               "architecture": describe.get("architecture", "paper"),
               "protocol": describe.get("protocol", "paper")}
        for metric in PAPER_METRICS:
            mean, std = group.mean_std(metric)
            row[f"{metric}_mean"] = 100 * mean
            row[f"{metric}_std"] = None if std is None else 100 * std
        if paper:
            found = describe["variant"] and paper_row(
                paper, dataset=describe["dataset"], category=describe["category"],
                setting=describe["setting"], text=describe["text"], variant=describe["variant"])
            row["paper_table"] = found["table"] if found else None
            row["paper_variant"] = describe["variant"]
            row["paper_selection"] = PAPER_SELECTION.get(paper) if found else None
            for metric in PAPER_METRICS:
                row[f"paper_{metric}"] = found[metric] if found else None
                row[f"difference_{metric}"] = (row[f"{metric}_mean"] - found[metric]
                                               if found else None)
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _p(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return f"{value:.2e}" if value < 1e-3 else f"{value:.4f}"


def describe_apart(apart: Sequence[tuple[Group, Group]]) -> list[str]:
    """One line per pair of groups kept apart, naming both groups' runs and manifests."""
    def runs(group: Group) -> str:
        return (f"{group.name} (manifest {str(group.settings.get('input.manifest'))[:16]}: "
                + ", ".join(str(r.path) for r in group.runs) + ")")
    return [f"{runs(a)} and {runs(b)}" for a, b in apart]


def markdown(summary: pd.DataFrame, tests: pd.DataFrame, split: str, paper: str | None,
             apart: Sequence[tuple[Group, Group]] = ()) -> str:
    lines = [f"# {split} split: mean ± standard deviation over seeds (%)", ""]
    header = ["group", "runs", "seeds", "architecture", "protocol",
              *(LABELS[m] for m in PAPER_METRICS)]
    if paper:
        header += [f"{paper} table", *(f"{paper} {LABELS[m]} (Δ)" for m in PAPER_METRICS)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary.to_dict("records"):
        cells = [row["group"], str(row["runs"]), row["seeds"], row["architecture"],
                 row["protocol"]]
        for metric in PAPER_METRICS:
            std = row[f"{metric}_std"]
            cells.append(_cell(row[f"{metric}_mean"])
                         + ("" if std is None or np.isnan(std) else f" ± {std:.2f}"))
        if paper:
            selection = f"; {row['paper_selection']}" if row.get("paper_selection") else ""
            cells.append(f"{row['paper_table']}, {row['paper_variant']}{selection}"
                         if row["paper_table"] else "not reported")
            for metric in PAPER_METRICS:
                figure = row[f"paper_{metric}"]
                cells.append("–" if figure is None or np.isnan(figure) else
                             f"{figure:.2f} ({row[f'difference_{metric}']:+.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    if len(tests):
        lines += ["", "## Paired t-tests (A − B; * p < 0.05, ** p < 0.01)", "",
                  "| A | B | metric | paired over | n | Δ (points) | t | p | |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in tests.to_dict("records"):
            delta = row["mean_difference"]
            lines.append(" | ".join([
                f"| {row['group_a']}", row["group_b"], LABELS[row["metric"]], row["paired_over"],
                str(row["n"]), "–" if delta is None else f"{100 * delta:+.2f}",
                _cell(row["t"], 3), _p(row["p"]), row["mark"]]) + " |")
        lines += ["", "Over products: each product's metric is averaged over a group's seeds "
                      "first. Over seeds: runs of the same seed are paired."]
    if apart:
        lines += ["", "## Not paired: made on different manifests", "",
                  "Their products are other items or carry other labels, so no test pairs "
                  "them:", ""]
        lines += [f"- {line}" for line in describe_apart(apart)]
    return "\n".join(lines) + "\n"


def plot(path: Path, summary: pd.DataFrame, paper: str | None) -> None:
    """Bars of the mean per group and metric, error bars one standard deviation, the paper's
    figure as a black tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = summary["group"].tolist()
    fig, axes = plt.subplots(1, len(PAPER_METRICS), figsize=(4 + 1.2 * len(groups) * 3, 4.5),
                             squeeze=False)
    x = np.arange(len(groups))
    for axis, metric in zip(axes[0], PAPER_METRICS):
        means = summary[f"{metric}_mean"].to_numpy(dtype=np.float64)
        stds = np.nan_to_num(summary[f"{metric}_std"].to_numpy(dtype=np.float64))
        axis.bar(x, means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
        if paper and f"paper_{metric}" in summary:
            figures = summary[f"paper_{metric}"].to_numpy(dtype=np.float64)
            axis.scatter(x, figures, marker="_", s=400, color="black", label=f"{paper} paper")
            if np.isfinite(figures).any():
                axis.legend()
        axis.set_xticks(x, [g if len(g) < 30 else g[:27] + "..." for g in groups], rotation=20,
                        ha="right", fontsize=8)
        axis.set(title=LABELS[metric] + " (%)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.10g")


def compare(paths: Sequence[str | Path], out: str | Path, split: str = "test",
            paper: str | None = None) -> tuple[Path, pd.DataFrame, pd.DataFrame, list[Path],
                                               list[tuple[Group, Group]]]:
    """Group the runs under `paths`, test the groups against each other, write the files.
    Returns (out, summary, tests, unfinished runs left out, pairs of groups kept apart)."""
    runs, unfinished = find_runs(paths)
    groups = group_runs([load_run(path, split) for path in runs])
    summary, tests = summary_frame(groups, paper), compare_groups(groups)
    apart = kept_apart(groups)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "compare.csv", summary)
    write_csv(out / "compare-tests.csv", tests)
    with atomic_path(out / "compare.md") as tmp:
        tmp.write_text(markdown(summary, tests, split, paper, apart), encoding="utf-8")
    plot(out / "compare.png", summary, paper)
    return out, summary, tests, unfinished, apart
