"""Experiment results: mean and standard deviation per arm and metric, report.md and a plot."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import numpy as np

# Which direction is better, for the report's wording.
LOWER_IS_BETTER = {
    "bits_per_byte",
    "response_loss",
    "response_ppl",
    "train_loss",
    "heldout_loss",
    "loss_gap",
    "train_response_loss",
    "response_loss_gap",
}


# A plot is a few tens of KB; past this, a viewer is better served by the file's path.
EMBED_LIMIT_BYTES = 1 << 20
_LOCAL_PNG = re.compile(r"!\[([^\]]*)\]\(([^)\s:]+\.png)\)")


def aggregate(results: list[dict[str, Any]], arms: list[str]) -> list[dict[str, Any]]:
    """One row per arm and metric: mean, sample standard deviation (0 for one seed), n."""
    rows = []
    for arm in arms:
        runs = [r for r in results if r["arm"] == arm]
        if not runs:
            continue
        for metric in dict.fromkeys(m for r in runs for m in r["metrics"]):
            values = np.array(
                [r["metrics"][metric] for r in runs if metric in r["metrics"]], dtype=np.float64
            )
            rows.append(
                {
                    "arm": arm,
                    "metric": metric,
                    "mean": float(values.mean()),
                    "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                    "n": len(values),
                }
            )
    return rows


def write_plot(table: list[dict[str, Any]], path: Path, title: str) -> None:
    """A PNG with one panel per metric: the mean per arm with standard-deviation error bars."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(row["metric"] for row in table))
    figure, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.5), squeeze=False)
    for axis, metric in zip(axes[0], metrics, strict=True):
        rows = [r for r in table if r["metric"] == metric]
        positions = np.arange(len(rows))
        # Points, not bars: the axis then spans the data, so small differences stay visible.
        axis.errorbar(
            positions,
            [r["mean"] for r in rows],
            yerr=[r["std"] for r in rows],
            fmt="o",
            capsize=4,
            color="#4c72b0",
        )
        axis.grid(axis="y", alpha=0.3)
        axis.set_xticks(positions, [r["arm"] for r in rows], rotation=30, ha="right")
        better = "lower" if metric in LOWER_IS_BETTER else "higher"
        axis.set_title(f"{metric} ({better} is better)", fontsize=9)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(
    path: Path,
    run_id: str,
    spec: dict[str, Any],
    table: list[dict[str, Any]],
    results: list[dict[str, Any]],
    plot_name: str,
) -> None:
    """report.md: the set-up, the table of means and deviations, per-run figures, the plot."""
    metrics = list(dict.fromkeys(row["metric"] for row in table))
    arms = list(dict.fromkeys(row["arm"] for row in table))
    cell = {(r["arm"], r["metric"]): r for r in table}
    task = f"task {spec['task']['kind']} on `{spec['task']['corpus']}`"
    if spec.get("vary") == "finetune":
        setup = f"Arms vary the fine-tuning set of the {task} (one base); seeds {spec['seeds']}."
    else:
        setup = (
            f"Pool `{spec['pool']}`, target `{spec.get('target') or spec['pool']}`, {task}; "
            f"{spec['tokens']:,} continued-pretraining tokens per arm; seeds {spec['seeds']}."
        )
    lines = [
        f"# Experiment {run_id}",
        "",
        setup,
        "",
        "Mean ± standard deviation over seeds ("
        + "; ".join(
            f"{m}: {'lower' if m in LOWER_IS_BETTER else 'higher'} is better" for m in metrics
        )
        + ").",
        "",
        "| arm | " + " | ".join(metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for arm in arms:
        values = [
            f"{cell[(arm, m)]['mean']:.4f} ± {cell[(arm, m)]['std']:.4f}"
            if (arm, m) in cell
            else ""
            for m in metrics
        ]
        lines.append(f"| {arm} | " + " | ".join(values) + " |")
    lines += [
        "",
        "| arm | seed | continued tokens | tokens/s | MFU | fine-tuning examples | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rate = f"{r['continued_tokens_per_s']:.0f}" if r.get("continued_tokens_per_s") else "-"
        mfu = f"{r['continued_mfu']:.1%}" if r.get("continued_mfu") else "-"
        wall = f"{r['wall_s']:.0f}" if r.get("wall_s") is not None else "-"
        lines.append(
            f"| {r['arm']} | {r['seed']} | {r['continued_tokens']:,} | {rate} | {mfu} | "
            f"{r.get('task_train_examples', '-')} | {wall} |"
        )
    lines += ["", f"![metrics per arm]({plot_name})", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def inline_plots(report: Path, limit: int = EMBED_LIMIT_BYTES) -> str:
    """report.md with each PNG it shows from its own directory inlined as a data: URI, for
    viewers that cannot read the run directory (the Prefect UI); a missing or larger file is
    named by its full path instead."""

    def inline(match: re.Match[str]) -> str:
        alt, name = match.group(1), match.group(2)
        path = report.parent / name
        if path.resolve().parent != report.parent.resolve():
            return match.group(0)  # only the run's own plots
        if not path.is_file():
            return f"({alt}: {path} is missing)"
        size = path.stat().st_size
        if size > limit:
            return f"({alt}: {path}, {size:,} bytes, too large to show inline)"
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"![{alt}](data:image/png;base64,{encoded})"

    return _LOCAL_PNG.sub(inline, report.read_text(encoding="utf-8"))
