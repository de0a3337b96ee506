"""Write the effect study's tables and plots into EFFECT.md from the runs in the workspace.

    python examples/study/effect.py [--effect EFFECT.md] [--plots examples/study/plots]

For each study recipe it finds the experiment's run (the same run id `gristmill experiment`
uses) and reads every finished arm run, so a partly finished study is reported as far as it
got. The generated part of EFFECT.md lies between the two `<!-- effect-tables -->` markers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from gristmill.errors import InputError
from gristmill.flows.experiment import run_id_for
from gristmill.recipe import load_recipe
from gristmill.storage.workspace import Workspace
from gristmill.training.data import DataSource, read_documents
from gristmill.training.experiment import check_sources, data_versions, finished_arm
from gristmill.training.report import LOWER_IS_BETTER, aggregate, write_plot

HERE = Path(__file__).resolve().parent
RECIPES = ["study-sst2.yaml", "study-agnews.yaml", "finetune-sst2.yaml", "finetune-alpaca.yaml"]
MARKER = "<!-- effect-tables -->"
# The columns of each kind of experiment; the first is the metric compared with `random`.
COLUMNS = {
    "continued": [
        "bits_per_byte", "accuracy", "macro_f1", "train_loss", "heldout_loss", "loss_gap"
    ],
    "classification": ["accuracy", "macro_f1", "train_accuracy"],
    "sft": ["response_loss", "train_response_loss", "response_loss_gap"],
}  # fmt: skip
PLOTTED = {
    "continued": ["bits_per_byte", "accuracy", "loss_gap"],
    "classification": ["accuracy", "train_accuracy"],
    "sft": ["response_loss", "response_loss_gap"],
}


def arm_results(recipe_path: Path) -> tuple[str, Any, list[dict[str, Any]]]:
    """The run id, the experiment spec and every finished arm run of one study recipe."""
    recipe = load_recipe(recipe_path)
    spec = recipe.experiment
    workspace = Workspace(recipe.workspace)
    try:
        check_sources(workspace, spec)
    except InputError:  # its selections are not made yet: the recipe has not run
        return "not run yet", spec, []
    run_id = run_id_for(spec, data_versions(workspace, spec))
    base = workspace.root / "models" / spec.base.name  # the study's bases are presets
    if not (base / "tokenizer.json").exists():
        return run_id, spec, []
    found = [finished_arm(workspace, spec, str(base), a, s) for a in spec.arms for s in spec.seeds]
    return run_id, spec, [r for r in found if r is not None]


def composition(recipe_paths: list[Path]) -> list[str]:
    """Markdown: what each continued-pretraining arm is made of (domains, planted documents),
    one table over the arms of every recipe that has run."""
    rows = {}
    for recipe_path in recipe_paths:
        recipe = load_recipe(recipe_path)
        spec = recipe.experiment
        workspace = Workspace(recipe.workspace)
        for name in [spec.pool, *spec.selection_arms()]:
            if name in rows:
                continue
            try:
                table = read_documents(
                    workspace, DataSource(selection=name), columns=("domain", "meta")
                )
            except InputError:  # this recipe has not run yet
                break
            planted = [json.loads(m).get("planted", "none") for m in table["meta"].to_pylist()]
            rows[name] = (table["domain"].to_pylist(), planted)
    domains = sorted({d for ds, _ in rows.values() for d in ds})
    kinds = ["duplicate", "near_duplicate", "junk", "contamination"]
    lines = [
        "| documents of | n | " + " | ".join(domains) + " | " + " | ".join(kinds) + " |",
        "|---|---:|" + "---:|" * (len(domains) + len(kinds)),
    ]
    for name, (names, planted) in rows.items():
        shares = [f"{names.count(d) / max(1, len(names)):.0%}" for d in domains]
        counts = [str(planted.count(k)) for k in kinds]
        lines.append(f"| {name} | {len(names)} | " + " | ".join(shares + counts) + " |")
    return lines


def _cell(row: dict[str, Any] | None, digits: int = 3) -> str:
    if row is None:
        return ""
    return f"{row['mean']:.{digits}f} ± {row['std']:.{digits}f}"


def verdict(table: list[dict[str, Any]], arm: str, metric: str) -> str:
    """How an arm compares with `random` on a metric: the difference and whether it is beyond
    two standard deviations (the larger of the two arms')."""
    cell = {(r["arm"], r["metric"]): r for r in table}
    if (arm, metric) not in cell or ("random", metric) not in cell:
        return ""
    mine, base = cell[(arm, metric)], cell[("random", metric)]
    better = (
        base["mean"] - mine["mean"] if metric in LOWER_IS_BETTER else mine["mean"] - base["mean"]
    )
    noise = 2 * max(mine["std"], base["std"])
    if min(mine["n"], base["n"]) < 2:
        return f"{better:+.3f} (one seed)"
    word = "better" if better > noise else "worse" if -better > noise else "within noise"
    return f"{better:+.3f} ({word}; 2σ = {noise:.3f})"


def section(recipe_path: Path, plots: Path, effect_dir: Path) -> list[str]:
    """Markdown for one recipe: its table of mean ± std per arm, the comparison and the plot."""
    recipe_name = recipe_path.name
    run_id, spec, results = arm_results(recipe_path)
    kind = "continued" if spec.vary == "continued" else spec.task.kind
    columns = COLUMNS[kind]
    table = aggregate(results, spec.arms)
    cell = {(r["arm"], r["metric"]): r for r in table}
    seeds = len(spec.seeds)
    lines = [
        f"### `{recipe_name}` (run `{run_id}`)",
        "",
        f"{len(results)} of {len(spec.arms) * seeds} arm runs finished. Mean ± standard "
        "deviation over seeds; `vs random` is the first metric's improvement over `random`.",
        "",
        "| arm | n | " + " | ".join(columns) + " | tokens | examples | wall s | vs random |",
        "|---|---:|" + "---:|" * (len(columns) + 4),
    ]
    for arm in spec.arms:
        runs = [r for r in results if r["arm"] == arm]
        if not runs:
            lines.append(f"| {arm} | 0 |" + " |" * (len(columns) + 4))
            continue
        tokens = int(np.mean([r["continued_tokens"] for r in runs]))
        examples = int(np.mean([r["task_train_examples"] for r in runs]))
        wall = np.mean([r.get("wall_s") or 0.0 for r in runs])
        values = [_cell(cell.get((arm, m))) for m in columns]
        lines.append(
            f"| {arm} | {len(runs)} | " + " | ".join(values) + f" | {tokens:,} | {examples:,} | "
            f"{wall:.0f} | {verdict(table, arm, columns[0]) if arm != 'random' else ''} |"
        )
    if kind == "continued":
        lines += ["", "Accuracy vs random: " + "; ".join(
            f"{arm} {verdict(table, arm, 'accuracy')}"
            for arm in spec.arms if arm != "random" and (arm, "accuracy") in cell
        ) + "."]  # fmt: skip
    if table:
        plot = plots / f"{recipe_name.removesuffix('.yaml')}.png"
        shown = [r for r in table if r["metric"] in PLOTTED[kind]]
        write_plot(shown, plot, f"{recipe_name}: mean ± std over seeds")
        lines += ["", f"![{recipe_name}]({plot.resolve().relative_to(effect_dir.resolve())})"]
    return [*lines, ""]


def main() -> None:
    """Command line: regenerate the tables and plots of EFFECT.md."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--effect", type=Path, default=HERE.parents[1] / "EFFECT.md")
    parser.add_argument("--plots", type=Path, default=HERE / "plots")
    args = parser.parse_args()
    generated = [
        "### What the continued-pretraining arms are made of",
        "",
        "Share of each domain and counts of the planted documents (`study-sst2.yaml`, then "
        "the targeted arms of `study-agnews.yaml`).",
        "",
        *composition([HERE / "study-sst2.yaml", HERE / "study-agnews.yaml"]),
        "",
    ]
    for name in RECIPES:
        generated += section(HERE / name, args.plots, args.effect.parent)
    text = args.effect.read_text(encoding="utf-8")
    head, _, rest = text.partition(MARKER)
    _, _, tail = rest.partition(MARKER)
    args.effect.write_text(
        head + MARKER + "\n\n" + "\n".join(generated) + "\n" + MARKER + tail, encoding="utf-8"
    )
    print(f"wrote {args.effect} and plots under {args.plots}")


if __name__ == "__main__":
    main()
