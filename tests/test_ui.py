"""What a person watches: progress bars that move per finished shard, the selection's score
distribution and examples, the experiment report's plot, and the recipe's summary artifact."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import good_text, write_jsonl
from rich.console import Console

from gristmill import pipeline, progress
from gristmill.console_progress import format_amount, rich_progress
from gristmill.flows.ui import (
    examples_markdown,
    histogram_markdown,
    recipe_summary_markdown,
    score_histogram,
    selection_markdown,
)
from gristmill.selectors.selection import SelectOptions
from gristmill.storage.queries import SelectionView
from gristmill.storage.readers import IngestOptions
from gristmill.storage.workspace import Workspace
from gristmill.training.report import inline_plots, write_plot

SHARDS = 4
DOCS = 12


class Recorder:
    """A progress factory that records each loop's total, unit and advances."""

    def __init__(self) -> None:
        self.loops: list[dict[str, Any]] = []

    def __call__(self, description: str, total: float | None, unit: str = "") -> Any:
        loop = {"description": description, "total": total, "unit": unit, "advances": []}
        self.loops.append(loop)

        class Task:
            def advance(self, amount: float = 1) -> None:
                loop["advances"].append(amount)

            def close(self) -> None:
                loop["closed"] = True

        return Task()

    def loop(self, prefix: str) -> dict[str, Any]:
        (found,) = [loop for loop in self.loops if loop["description"].startswith(prefix)]
        return found


def _corpus(tmp_path: Path) -> Workspace:
    """A corpus of SHARDS shards (one file each), some documents failing the quality rules."""
    raw = tmp_path / "raw"
    for f in range(SHARDS):
        records = [
            {"text": good_text(f * DOCS + i) if i % 4 else "buy now " * 3, "site": f"s{i % 2}"}
            for i in range(DOCS)
        ]
        write_jsonl(raw / f"part-{f}.jsonl", records)
    ws = Workspace(tmp_path / "ws")
    pipeline.ingest(ws, [str(raw)], "web", IngestOptions(domain_field="site"))
    return ws


# -- progress ----------------------------------------------------------------------------------


def test_advancing_moves_the_display_per_result_before_any_batching() -> None:
    recorder = Recorder()
    with progress.reporting(recorder):
        bar = progress.track("work", 30, unit="docs")
        results = list(progress.advancing(iter([10, 15, 5]), bar, lambda n: n))
    assert results == [10, 15, 5]
    assert recorder.loops[0]["advances"] == [10, 15, 5]
    assert recorder.loops[0]["unit"] == "docs"


def test_a_factory_of_two_arguments_still_works_and_gets_no_unit() -> None:
    seen = []
    with progress.reporting(lambda d, t: seen.append((d, t)) or progress.SILENT):
        progress.track("plain", 3)
    assert seen == [("plain", 3)]


def test_curate_advances_its_bar_once_per_finished_shard_in_documents(tmp_path: Path) -> None:
    ws = _corpus(tmp_path)
    recorder = Recorder()
    with progress.reporting(recorder):
        pipeline.curate(ws, "web", "quality", name="clean")
    loop = recorder.loop("score web with quality")
    assert loop["unit"] == "docs" and loop["total"] == SHARDS * DOCS
    assert loop["advances"] == [DOCS] * SHARDS


def test_ingest_advances_its_bar_once_per_finished_chunk(tmp_path: Path) -> None:
    recorder = Recorder()
    with progress.reporting(recorder):
        _corpus(tmp_path)
    assert recorder.loop("ingest web")["advances"] == [1] * SHARDS


def test_rich_progress_draws_nothing_when_quiet_or_not_a_terminal() -> None:
    for console, quiet in ((Console(file=io.StringIO()), False),
                           (Console(file=io.StringIO(), force_terminal=True), True)):  # fmt: skip
        with rich_progress(console, quiet):
            assert progress.current_factory() is None
            bar = progress.track("score web with quality", 4, unit="docs")
            bar.advance(4)
            bar.close()
        assert console.file.getvalue() == ""  # type: ignore[attr-defined]


def test_rich_progress_shows_one_bar_per_loop_with_its_count_and_rate() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with rich_progress(console):
        bar = progress.track("score web with quality", 48, unit="docs")
        for _ in range(4):
            bar.advance(12)
            time.sleep(0.01)  # the rate needs two samples apart in time
        bar.close()
        # Nothing to do (every shard's scores reused): no bar that sits at 0%.
        progress.track("count tokens in web", 0, unit="docs").close()
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    final = shown.rsplit("\r", 1)[-1]
    assert "score web with quality" in final and "100%" in final and "48/48" in final
    assert "docs/s" in final
    assert "count tokens" not in shown


def test_byte_amounts_read_in_decimal_prefixes() -> None:
    assert format_amount(12_500, "docs") == "12,500 docs"
    assert format_amount(3_250_000, "bytes") == "3.2 MB"
    assert format_amount(512, "bytes") == "512 B"


# -- the selection's score distribution and examples --------------------------------------------


def _view(
    con: duckdb.DuckDBPyConnection, scores: list[float | None], kept: set[int]
) -> SelectionView:
    """A SelectionView over in-memory candidates: doc i has scores[i]; `kept` are kept."""
    con.execute("create table docs as select i::bigint as doc_id, 'd' as domain, 't' as text "
                "from range(?) t(i)", [len(scores)])  # fmt: skip
    con.execute("create table signal (doc_id bigint, score double)")
    con.executemany("insert into signal values (?, ?)", list(enumerate(scores)))
    con.execute("create table members as select unnest(?::bigint[]) as doc_id", [sorted(kept)])
    return SelectionView(
        record={"summary": {}}, con=con, candidates="docs d", signal="signal s",
        kept="d.doc_id in (select doc_id from members)", columns=frozenset({"doc_id", "score"}),
        sample=2, seed=0, max_chars=50,
    )  # fmt: skip


def test_histogram_bins_continuous_scores_into_equal_widths_and_counts_unscored_apart() -> None:
    scores: list[float | None] = [i / 19 for i in range(20)] + [None, float("nan")]
    with duckdb.connect() as con:
        histogram = score_histogram(_view(con, scores, kept=set(range(10, 21))), bins=4)
    assert not histogram["exact"]
    rows = histogram["rows"]
    assert [r["kept"] + r["dropped"] for r in rows] == [5, 5, 5, 5]
    assert [r["kept"] for r in rows] == [0, 0, 5, 5]
    assert rows[0]["low"] == 0.0 and rows[-1]["high"] == 1.0
    assert histogram["unscored"] == {"kept": 1, "dropped": 1}
    table = histogram_markdown(histogram)
    assert "| 0 – 0.25 | 0 |" in table and "| no score | 1 |" in table


def test_histogram_of_a_keep_or_drop_score_has_one_row_per_value() -> None:
    with duckdb.connect() as con:  # dedup: 1.0 kept, 0.0 dropped
        histogram = score_histogram(_view(con, [1.0, 0.0, 1.0, 1.0], kept={0, 2, 3}))
    assert histogram["exact"]
    assert [(r["low"], r["kept"], r["dropped"]) for r in histogram["rows"]] == [
        (0.0, 0, 1), (1.0, 3, 0)
    ]  # fmt: skip


def test_histogram_without_any_numeric_score_says_so() -> None:
    with duckdb.connect() as con:
        histogram = score_histogram(_view(con, [None, None], kept={0}))
    assert histogram["rows"] == [] and histogram["unscored"] == {"kept": 1, "dropped": 1}
    assert "No candidate has a numeric score" in histogram_markdown(histogram)


def test_examples_escape_markdown_and_html_and_mark_cut_texts() -> None:
    doc = {"doc_id": 7, "domain": "web", "score": 0.25, "reasons": ["min_words"],
           "text": "<script>x</script> a | b *bold* [link](http://x)\n" + "z" * 40}  # fmt: skip
    markdown = examples_markdown({"kept": [], "dropped": [doc]}, max_chars=len(doc["text"]))
    line = next(ln for ln in markdown.splitlines() if "doc `7`" in ln)
    assert "<script>" not in line and "&lt;script&gt;" in line
    assert "\\|" in line and "\\*bold\\*" in line and "\\[link\\]" in line
    assert "reasons: min\\_words" in line and "score 0.25" in line and line.endswith("…”")
    assert "- none kept" in markdown


def test_selection_markdown_from_a_real_selection(tmp_path: Path) -> None:
    ws = _corpus(tmp_path)
    pipeline.curate(ws, "web", "quality", name="clean", budget="50%",
                    options=SelectOptions(mode="gumbel", seed=1))  # fmt: skip
    markdown = selection_markdown(ws, "clean")
    assert "24 of 48 documents of `web` kept by `quality`" in markdown
    table = markdown.split("## Score distribution")[1].split("## Examples")[0]
    counts = [ln.split("|")[2:5:2] for ln in table.splitlines() if ln.startswith("| ")][1:]
    assert sum(int(k) for k, _ in counts) == 24 and sum(int(d) for _, d in counts) == 24
    assert markdown.count("reasons:") >= 1  # the junk documents' failed rules


# -- the experiment report's plot ---------------------------------------------------------------


def _report(tmp_path: Path, image: str) -> Path:
    report = tmp_path / "run" / "report.md"
    report.parent.mkdir(parents=True)
    report.write_text(f"# Experiment\n\n![metrics per arm]({image})\n", encoding="utf-8")
    return report


def test_report_plot_is_inlined_as_a_data_uri(tmp_path: Path) -> None:
    report = _report(tmp_path, "metrics.png")
    table = [{"arm": a, "metric": "accuracy", "mean": m, "std": 0.01, "n": 2}
             for a, m in (("none", 0.5), ("quality", 0.6))]  # fmt: skip
    write_plot(table, report.parent / "metrics.png", "run: metric per arm")
    markdown = inline_plots(report)
    prefix = "![metrics per arm](data:image/png;base64,"
    assert prefix in markdown and "metrics.png" not in markdown
    encoded = markdown.split(prefix)[1].split(")")[0]
    assert base64.b64decode(encoded) == (report.parent / "metrics.png").read_bytes()
    assert len(encoded) < 200_000  # a plot is small enough to travel in an artifact


def test_report_plot_too_large_or_missing_is_named_by_path(tmp_path: Path) -> None:
    report = _report(tmp_path, "metrics.png")
    assert f"{report.parent / 'metrics.png'} is missing" in inline_plots(report)
    (report.parent / "metrics.png").write_bytes(b"\x89PNG" + b"0" * 100)
    assert "too large to show inline" in inline_plots(report, limit=50)
    outside = _report(tmp_path / "other", "../secret.png")
    (outside.parent.parent / "secret.png").write_bytes(b"\x89PNG")
    assert "](../secret.png)" in inline_plots(outside)  # only the run's own files


# -- the recipe summary -------------------------------------------------------------------------


def test_recipe_summary_lists_every_step_with_its_counts(tmp_path: Path) -> None:
    ws = _corpus(tmp_path)
    clean = pipeline.curate(ws, "web", "quality", name="clean")
    half = pipeline.curate(ws, "web", "quality", name="half", budget="50%", parent="clean",
                           options=SelectOptions(mode="gumbel", seed=1))  # fmt: skip
    written = pipeline.materialize(ws, "half", str(tmp_path / "out"), "jsonl")
    ingest = pipeline.ingest(ws, [str(tmp_path / "raw")], "web", IngestOptions(domain_field="site"))
    results = {"workspace": str(ws.root), "ingest": [ingest.as_dict()], "zoo": [],
               "select": [clean.as_dict(), half.as_dict()], "out": [written]}  # fmt: skip
    markdown = recipe_summary_markdown("nightly", results)
    kept = clean.record["n_selected"]  # type: ignore[index]
    assert markdown.startswith("# Recipe nightly")
    assert f"| web | {SHARDS} | {SHARDS} | 0 | 0 | 0 | {SHARDS * DOCS} |" in markdown
    assert f"| clean | web | quality | none | {kept} | {SHARDS * DOCS} |" in markdown
    assert f"| half | clean | quality | 50% | {kept // 2} | {kept} | 50.0 | 0 | {SHARDS} |" in (
        markdown
    )
    assert f"| half | jsonl | {kept // 2} | {tmp_path / 'out'} |" in markdown
    assert "Experiment" not in markdown


@pytest.mark.usefixtures("prefect_server")
def test_run_recipe_publishes_its_summary_and_logs_its_counts(tmp_path: Path) -> None:
    import yaml
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        LogFilter,
        LogFilterFlowRunId,
    )

    from gristmill.flows import run_recipe_flow
    from gristmill.recipe import load_recipe

    _corpus(tmp_path)  # the raw files; the recipe ingests them into its own workspace
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "summary-check",
        "ingest": [{"corpus": "web", "paths": [str(tmp_path / "raw")], "domain_field": "site"}],
        "select": [{"name": "clean", "selector": "quality"}],
    }), encoding="utf-8")  # fmt: skip
    state = run_recipe_flow(load_recipe(recipe), str(tmp_path / "flow-ws"), "threads", 1,
                            return_state=True)  # fmt: skip
    assert state.is_completed()
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["recipe-summary-check"])),
            limit=5,
        )
        deadline = time.monotonic() + 30
        while True:  # logs reach the API a moment after the flow returns
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
            messages = [log.message for log in logs]
            if any(m.startswith("select clean") for m in messages) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert artifact.type == "markdown" and "| clean | web | quality |" in artifact.data
    with get_client(sync_client=True) as client:  # named after what it runs, not `eager-crab`
        assert client.read_flow_run(flow_run_id).name == "recipe summary-check"
    with get_client(sync_client=True) as client:  # the curate flow published it
        scores = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["selection-scores-clean"])),
            limit=5,
        )
    assert scores and all(a.type == "markdown" for a in scores)
    assert any("## Score distribution" in a.data for a in scores)
    assert any(m.startswith(f"ingest web: +{SHARDS * DOCS} documents") for m in messages)
    assert any(m.startswith("select clean (quality, budget none) from web: kept") for m in messages)
