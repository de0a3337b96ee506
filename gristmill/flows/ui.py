"""What the Prefect UI shows of a run: progress artifacts for long loops, selection tables and
each selection's score distribution with example documents.

The library reports progress through `gristmill.progress` and never imports Prefect; a flow
installs `progress_artifacts()` so that each loop also updates a progress artifact, next to
whatever the caller shows (the CLI's rich bars).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from gristmill import progress
from gristmill.storage import queries
from gristmill.storage.queries import SelectionView
from gristmill.storage.workspace import Workspace

logger = logging.getLogger(__name__)
# Seconds between two updates of one progress artifact: each update is an API call.
UPDATE_EVERY_S = 1.0


def artifact_key(prefix: str, name: str) -> str:
    """A valid artifact key (lowercase letters, digits and dashes) for a name."""
    return (prefix + "-" + "".join(c if c.isalnum() else "-" for c in name.lower()))[:100]


class _ArtifactProgress:
    """One loop's progress artifact; failures to reach the API never stop the loop."""

    def __init__(self, description: str, total: float) -> None:
        self.description = description
        self.total = total
        self.done = 0.0
        self.last_update = time.monotonic()
        self.guard = threading.Lock()  # loops may advance from several worker threads
        self.artifact_id = self._call(
            create_progress_artifact,
            0.0 if total else 100.0,
            key=artifact_key("progress", description),
            description=description,
        )

    def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as error:  # the UI is a view; the work goes on without it
            logger.warning("progress artifact %r not updated: %s", self.description, error)
            return None

    def _update(self) -> None:
        if self.artifact_id is not None and self.total:
            percent = min(100.0, 100.0 * self.done / self.total)
            self._call(update_progress_artifact, self.artifact_id, percent)
        self.last_update = time.monotonic()

    def advance(self, amount: float = 1) -> None:
        with self.guard:
            self.done += amount
            if time.monotonic() - self.last_update >= UPDATE_EVERY_S:
                self._update()

    def close(self) -> None:
        with self.guard:
            self._update()


class _Both:
    """Report one loop to two displays."""

    def __init__(self, first: progress.ProgressTask, second: progress.ProgressTask) -> None:
        self.first, self.second = first, second

    def advance(self, amount: float = 1) -> None:
        self.first.advance(amount)
        self.second.advance(amount)

    def close(self) -> None:
        self.first.close()
        self.second.close()


def _publishes(factory: Any) -> bool:
    return getattr(factory, "publishes_artifacts", False)


@contextlib.contextmanager
def progress_artifacts() -> Iterator[None]:
    """While the block runs, each loop of known length also updates a progress artifact."""
    shown = progress.current_factory()
    if _publishes(shown):  # a sub-flow of a flow that installed it already
        yield
        return

    def factory(description: str, total: float | None, unit: str = "") -> progress.ProgressTask:
        display = progress.SILENT
        if shown is not None:
            display = progress.start_with(shown, description, total, unit)
        if total is None:
            return display
        return _Both(_ArtifactProgress(description, total), display)

    factory.publishes_artifacts = True  # type: ignore[attr-defined]
    with progress.reporting(factory):
        yield


def publish_selection(record: dict[str, Any], workspace: Workspace | None = None) -> None:
    """A table artifact per selection: kept and dropped per domain, budget used, top reasons;
    given the workspace, also a markdown artifact of its score distribution and examples."""
    summary = record["summary"]
    table = [
        {k: d[k] for k in ("domain", "candidates", "kept", "dropped", "kept_bytes")}
        for d in summary["domains"]
    ]
    reasons = ", ".join(f"{r} ({n})" for r, n in summary.get("top_reasons", []))
    budget = summary.get("budget") or {}
    allowed = budget.get("allowed")
    used = (
        f"{budget['used']:,.0f} of {'no limit' if allowed is None else f'{allowed:,.0f}'} "
        f"{budget['counts']} (pool {budget['pool']:,.0f})"
        if "used" in budget
        else "n/a"
    )
    create_table_artifact(
        key=artifact_key("selection", record["name"]),
        table=table,
        description=(
            f"Selection {record['name']}: {record['n_selected']} of {record['n_candidates']} "
            f"documents from {record['corpus']} by {record['selector']}. "
            f"Budget {record['budget'] or 'none'}; used {used}. "
            f"Top reasons for dropping: {reasons or 'n/a'}"
        ),
    )
    if workspace is None:
        return
    try:
        markdown = selection_markdown(workspace, record["name"])
    except Exception as error:  # the UI is a view: the selection stands without it
        logger.warning("selection %r: no score artifact: %s", record["name"], error)
        return
    create_markdown_artifact(
        key=artifact_key("selection-scores", record["name"]),
        markdown=markdown,
        description=f"Selection {record['name']}: scores of kept and dropped documents",
    )


# Documents shown per side (kept, dropped) in a selection's artifact, and characters of each.
EXAMPLES = 3
EXAMPLE_CHARS = 240
BINS = 10
BAR_WIDTH = 20


def score_histogram(view: SelectionView, bins: int = BINS) -> dict[str, Any]:
    """Kept and dropped candidates per score bin: `bins` equal-width bins over the finite
    scores, or one row per value when there are at most `bins` values (a 0/1 dedup score);
    candidates without a finite score are counted apart, under `unscored`."""
    scored = (
        f"select s.score::double as score, ({view.kept}) as kept "
        f"from {view.candidates} join {view.signal} using (doc_id)"
    )
    finite = "score is not null and isfinite(score)"
    stats = view.rows(
        f"select min(score) as low, max(score) as high, count(distinct score) as n_values "
        f"from ({scored}) where {finite}"
    )[0]
    unscored = view.rows(
        f"select kept, count(*) as n from ({scored}) where not ({finite}) group by kept"
    )
    result: dict[str, Any] = {"exact": True, "rows": [], "unscored": _sides(unscored)}
    if not stats["n_values"]:
        return result
    low, high = stats["low"], stats["high"]
    if stats["n_values"] <= bins:
        counts = view.rows(
            f"select score as value, kept, count(*) as n from ({scored}) where {finite} "
            f"group by all order by value"
        )
        for value in sorted({c["value"] for c in counts}):
            sides = _sides([c for c in counts if c["value"] == value])
            result["rows"].append({"low": value, "high": value, **sides})
        return result
    width = (high - low) / bins
    counts = view.rows(
        f"select least(floor((score - ?) / ?)::bigint, ?) as bin, kept, count(*) as n "
        f"from ({scored}) where {finite} group by all",
        [low, width, bins - 1],
    )
    result["exact"] = False
    for b in range(bins):
        sides = _sides([c for c in counts if c["bin"] == b])
        upper = high if b == bins - 1 else low + (b + 1) * width
        result["rows"].append({"low": low + b * width, "high": upper, **sides})
    return result


def _sides(counts: list[dict[str, Any]]) -> dict[str, int]:
    """{"kept": n, "dropped": n} from rows of (kept flag, count)."""
    return {
        "kept": sum(c["n"] for c in counts if c["kept"]),
        "dropped": sum(c["n"] for c in counts if not c["kept"]),
    }


def _bar(count: int, largest: int) -> str:
    """A bar of block characters, BAR_WIDTH for the largest count, one at least for any."""
    return "█" * (max(1, round(BAR_WIDTH * count / largest)) if count else 0)


def histogram_markdown(histogram: dict[str, Any]) -> str:
    """The histogram as a markdown table: score range, kept and dropped counts with bars."""
    rows = list(histogram["rows"])
    unscored = histogram["unscored"]
    if not rows:
        return "No candidate has a numeric score: the selector keeps or drops without one.\n"
    largest = max(max(r["kept"], r["dropped"]) for r in rows) or 1
    lines = ["| score | kept | | dropped | |", "|---|---:|:---|---:|:---|"]
    for row in rows:
        label = (
            f"{row['low']:.4g}" if histogram["exact"] else f"{row['low']:.4g} – {row['high']:.4g}"
        )
        lines.append(
            f"| {label} | {row['kept']:,} | {_bar(row['kept'], largest)} "
            f"| {row['dropped']:,} | {_bar(row['dropped'], largest)} |"
        )
    if unscored["kept"] or unscored["dropped"]:
        lines.append(f"| no score | {unscored['kept']:,} | | {unscored['dropped']:,} | |")
    return "\n".join(lines) + "\n"


# Inline markup only: an example never starts a line, so `#`, `-` or `1.` cannot start a block.
_MARKDOWN_SPECIAL = str.maketrans(
    {c: "\\" + c for c in "\\`*_[]|~"} | {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
)


def _escaped(text: str) -> str:
    """Text on one line with markdown and HTML escaped, so a document cannot format the page."""
    return " ".join(text.split()).translate(_MARKDOWN_SPECIAL)


def examples_markdown(sample: dict[str, Any], max_chars: int = EXAMPLE_CHARS) -> str:
    """Kept and dropped example documents (from `queries.sample_selection`, texts cut at
    `max_chars`), each with its domain, score and reasons."""
    lines = []
    for side in ("kept", "dropped"):
        lines.append(f"**{side.capitalize()}** (at random)\n")
        if not sample[side]:
            lines.append(f"- none {side}")
        for doc in sample[side]:
            facts = [f"doc `{doc['doc_id']}`", f"domain {_escaped(str(doc['domain']))}"]
            if doc.get("score") is not None:
                facts.append(f"score {doc['score']:.4g}")
            if doc.get("reasons"):
                facts.append("reasons: " + ", ".join(_escaped(r) for r in doc["reasons"]))
            text = doc["text"] or ""
            cut = "…" if len(text) >= max_chars else ""
            lines.append(f"- {' · '.join(facts)}: “{_escaped(text)}{cut}”")
        lines.append("")
    return "\n".join(lines)


def selection_markdown(workspace: Workspace, name: str) -> str:
    """The selection artifact's markdown: the score distribution of kept and dropped
    candidates, then a few example documents of each with their reasons."""
    from gristmill.pipeline.inspection import selector_sections

    with queries.selection_view(workspace, name, EXAMPLES, 0, EXAMPLE_CHARS) as view:
        histogram = score_histogram(view)
        sample = queries.sample_selection(view)
        record = view.record
        # What the selector explains (per-language counts, a classifier's held-out metrics...).
        tables = [table for section in selector_sections(view) for table in section.tables]
    explained = "".join(f"## {t.title.capitalize()}\n\n{markdown_table(t.rows)}\n" for t in tables)
    return (  # no title: the artifact's page shows its key and description above it
        f"{record['n_selected']:,} of {record['n_candidates']:,} documents of "
        f"`{record['corpus']}` kept by `{record['selector']}`.\n\n"
        f"## Score distribution (`{record['signal']}`)\n\n{histogram_markdown(histogram)}\n"
        f"{explained}## Examples\n\n{examples_markdown(sample)}"
    )


def _cell(value: Any) -> str:
    """A value for a markdown table cell: numbers with thousands separators, pipes escaped."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows of equal keys as a markdown table."""
    if not rows:
        return "(none)\n"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def recipe_summary_markdown(name: str, results: dict[str, Any]) -> str:
    """The run-recipe artifact: every step of the recipe with its counts and outputs, from the
    recipe flow's result."""
    parts = [f"# Recipe {name}\n", f"Workspace `{results['workspace']}`.\n"]
    if results.get("ingest"):
        rows = [
            {
                "corpus": r["corpus"], "chunks": r["chunks"], "chunks skipped": r["chunks_skipped"],
                "records read": r["added"]["records_read"], "documents": r["added"]["documents"],
                "rejected": r["added"]["rejected"], "corpus documents": r["stats"]["documents"],
            }
            for r in results["ingest"]
        ]  # fmt: skip
        parts += ["## Ingest\n", markdown_table(rows)]
    if results.get("transform"):
        rows = [
            {"corpus": t["corpus"], "from": t["parent"],
             "transforms": ", ".join(x["name"] for x in t["transforms"]),
             "documents read": t["documents_read"], "kept": t["documents"],
             "dropped": t["dropped"], "shards rewritten": t["shards_done"],
             "shards reused": t["shards_reused"]}
            for t in results["transform"]
        ]  # fmt: skip
        parts += ["## Transforms\n", markdown_table(rows)]
    if results.get("zoo"):
        rows = [{"zoo": z["zoo"], "models": len(z.get("models", []))} for z in results["zoo"]]
        parts += ["## Model zoos\n", markdown_table(rows)]
    if results.get("select"):
        rows = []
        for step in results["select"]:
            record = step.get("selection") or {}
            kept, candidates = record.get("n_selected"), record.get("n_candidates")
            rows.append(
                {
                    "selection": record.get("name", "(scores only)"),
                    "input": record.get("parent") or step["corpus"],
                    "selector": step["selector"], "budget": record.get("budget") or "none",
                    "kept": kept, "candidates": candidates,
                    "kept %": f"{100 * kept / candidates:.1f}" if candidates else "",
                    "shards scored": step["shards_scored"], "shards reused": step["shards_reused"],
                }
            )  # fmt: skip
        parts += ["## Selections\n", markdown_table(rows)]
    if results.get("out"):
        rows = [
            {"selection": o["selection"], "format": o["format"], "documents": o["documents"],
             "out": o["out"]}
            for o in results["out"]
        ]  # fmt: skip
        parts += ["## Materialized\n", markdown_table(rows)]
    experiment = results.get("experiment")
    if experiment:
        table = [
            {"arm": r["arm"], "metric": r["metric"], "mean": r["mean"], "std": r["std"],
             "seeds": r["n"]}
            for r in experiment["table"]
        ]  # fmt: skip
        parts += [
            f"## Experiment {experiment['run_id']}\n",
            f"Report: `{experiment['run_dir']}/report.md`\n",
            markdown_table(table),
        ]
    return "\n".join(parts)


def publish_recipe(name: str, results: dict[str, Any]) -> None:
    """A markdown artifact summarising a whole recipe run."""
    create_markdown_artifact(
        key=artifact_key("recipe", name),
        markdown=recipe_summary_markdown(name, results),
        description=f"Recipe {name}: each step's counts and outputs",
    )
