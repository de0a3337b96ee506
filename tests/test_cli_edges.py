"""The CLI's rough edges, without running a flow: help, hints, narrow tables, CSV, selector
parameters, budgets in their units, drop, replacing selections, all-rejected ingests, the
progress display and the local server's wiring. Workspaces are built with the library."""

from __future__ import annotations

import csv
import io
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import typer
from conftest import copy_into, good_text, write_jsonl
from typer.testing import CliRunner

import gristmill
from gristmill import cli, pipeline, progress
from gristmill.cli import app
from gristmill.errors import InputError
from gristmill.pipeline import checks
from gristmill.storage import Workspace, queries
from gristmill.storage.drop import drop_corpus, drop_selection
from gristmill.storage.readers import IngestOptions

runner = CliRunner()


def invoke(*args: str, code: int = 0) -> Any:
    """Run the CLI in-process; check the exit code."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """raw/pool.jsonl and workspace ws: corpus `pool`, selections `clean` and `half`."""
    tmp_path = tmp_path_factory.mktemp("edges")
    records = [{"text": good_text(i), "site": "a" if i % 2 else "b"} for i in range(1200)]
    path = write_jsonl(tmp_path / "raw" / "pool.jsonl", records)
    workspace = Workspace(tmp_path / "ws")
    pipeline.ingest(workspace, [str(path)], "pool")
    pipeline.curate(workspace, "pool", "quality", name="clean")
    pipeline.curate(workspace, "pool", "quality", name="half", budget="50%", parent="clean")
    return tmp_path


@pytest.fixture
def ws(built: Path, tmp_path: Path) -> Workspace:
    """Corpus `pool` (1,200 documents in two domains), selection `clean` and `half` from it
    (the test's own copy)."""
    return Workspace(copy_into(built, tmp_path) / "ws")


# -- help ------------------------------------------------------------------------------------
def _command_paths(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a sub-app
            paths += _command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


def test_dash_h_is_help_on_every_command() -> None:
    paths = _command_paths(typer.main.get_command(app))
    assert ("drop", "corpus") in paths and ("server", "start") in paths and ("ui",) in paths
    for path in paths:
        result = invoke(*path, "-h")
        assert "Usage:" in result.output and "--help" in result.output, path


# -- hints and messages ------------------------------------------------------------------------
def test_hints_are_never_broken_across_lines(capsys: pytest.CaptureFixture[str]) -> None:
    corpus = "a-corpus-with-a-rather-long-name-that-pushes-the-hint-past-eighty-columns"
    stats = {"documents": 1, "text_bytes": 10, "rejected": 2, "n_domains": 1,
             "rejects_by_reason": {"missing_text": 2}}  # fmt: skip
    result = {"stats": stats, "added": {"documents": 1, "rejected": 2}, "chunks": 1,
              "chunks_skipped": 0, "skipped_inputs": []}  # fmt: skip
    cli._print_ingest(corpus, result)
    printed = capsys.readouterr().out
    assert f"`gristmill sql 'select * from \"{corpus}__rejects\"'`" in printed


def test_budget_used_is_reported_in_its_own_units() -> None:
    budget = {"budget": "2Mtokens", "counts": "tokens", "allowed": 2_000_000.0,
              "used": 1_999_761.0, "pool": 5_123_456.0, "exceeds_pool": False}  # fmt: skip
    assert cli._budget_used(budget) == (
        "budget 2Mtokens: used 1,999,761 of 2,000,000 tokens (pool 5,123,456)"
    )
    fraction = {"budget": "20%", "counts": "docs", "allowed": 10.4, "used": 10.0, "pool": 52.0}
    assert "used 10 of 10.4 documents" in cli._budget_used(fraction)
    assert cli._budget_used({"budget": None, "counts": "docs", "allowed": None}) is None


# -- tables ------------------------------------------------------------------------------------
def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_selections_table_fits_80_columns_one_line_a_row(ws: Workspace) -> None:
    shown = invoke("selections", "-w", str(ws.root)).stdout
    assert all(len(line) <= 80 for line in _lines(shown)), shown
    rows = [line for line in _lines(shown) if line.startswith(("│ clean", "│ half"))]
    assert len(rows) == 2, shown
    assert "1,200 of 1,200" in shown and "│ half  │ clean" in shown  # counts with separators
    listed = json.loads(invoke("selections", "-w", str(ws.root), "--json").stdout)
    assert {"n_selected", "bytes_selected", "mode"} <= set(listed[0])  # --json keeps it all


def test_sql_table_fits_80_columns_and_csv_gives_values_whole(ws: Workspace) -> None:
    query = "select doc_id, domain, text, n_bytes, source, source_line from pool order by doc_id"
    shown = invoke("sql", query, "--limit", "3", "-w", str(ws.root)).stdout
    assert all(len(line) <= 80 for line in _lines(shown)), shown
    assert len(_lines(shown)) == 3 + 4  # three rows, each on one line, and the frame
    text = invoke("sql", query, "--limit", "3", "--csv", "-w", str(ws.root)).stdout
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["doc_id", "domain", "text", "n_bytes", "source", "source_line"]
    assert len(rows) == 4 and rows[1][2].startswith("Record ") and len(rows[1][2]) > 200
    invoke("sql", query, "--csv", "--json", "-w", str(ws.root), code=2)


def test_stats_counts_have_thousands_separators(ws: Workspace) -> None:
    shown = invoke("stats", "pool", "-w", str(ws.root)).stdout
    assert "1,200 records read = 1,200 documents + 0 rejected" in " ".join(shown.split())


# -- selectors NAME --------------------------------------------------------------------------
def test_selectors_name_shows_parameters_defaults_and_descriptions() -> None:
    shown = " ".join(invoke("selectors", "dedup").stdout.split())
    assert "parameters" in shown and "threshold" in shown
    described = json.loads(invoke("selectors", "dedup", "--json").stdout)
    params = {p["param"]: p for p in described["params"]}
    assert params and all(p["description"] for p in params.values())
    assert "default" in params["threshold"] and described["selector"] == "dedup"
    assert "unknown selector" in invoke("selectors", "nope", code=2).output


# -- drop --------------------------------------------------------------------------------------
def test_drop_selection_refuses_while_selections_are_made_from_it(ws: Workspace) -> None:
    with pytest.raises(InputError, match=r"used by selections half; pass --cascade"):
        drop_selection(ws, "clean")
    dropped = drop_selection(ws, "clean", cascade=True)
    assert dropped.selections == ["clean", "half"]
    assert queries.list_selections(ws) == []
    assert not (ws.root / "selections" / "clean").exists()


def test_drop_corpus_refuses_while_used_then_removes_rows_and_files(ws: Workspace) -> None:
    refused = invoke("drop", "corpus", "pool", "-w", str(ws.root), code=2).output
    assert "selections clean, half" in refused and "stored signals" in refused
    assert (ws.root / "corpora" / "pool").exists()
    invoke("drop", "corpus", "pool", "--cascade", "-w", str(ws.root))
    assert queries.list_corpora(ws) == [] and queries.list_selections(ws) == []
    for directory in ("corpora/pool", "rejects/pool", "signals/pool", "selections/clean"):
        assert not (ws.root / directory).exists(), directory
    with ws.catalog(read_only=True) as con:
        for table in ("shards", "chunks", "sources", "signals", "rejects"):
            assert con.execute(f"select count(*) from {table}").fetchone() == (0,), table
    assert "no corpus named 'pool'" in invoke("drop", "corpus", "pool", "-w", str(ws.root),
                                              code=2).output  # fmt: skip


def test_drop_an_unused_corpus_needs_no_cascade(ws: Workspace, tmp_path: Path) -> None:
    other = write_jsonl(tmp_path / "other.jsonl", [{"text": good_text(i)} for i in range(3)])
    pipeline.ingest(ws, [str(other)], "other")
    assert drop_corpus(ws, "other").corpus == "other"
    assert [c["corpus"] for c in queries.list_corpora(ws)] == ["pool"]


# -- replacing a selection ---------------------------------------------------------------------
def test_an_existing_selection_is_replaced_only_when_asked(ws: Workspace) -> None:
    with pytest.raises(InputError, match=r"selection 'clean' already exists.*--replace"):
        checks.check_curate(ws, "pool", "quality", name="clean", replace=False)
    checks.check_curate(ws, "pool", "quality", name="clean", replace=True)
    checks.check_curate(ws, "pool", "quality", name="fresh", replace=False)


# -- ingest where every record is rejected -----------------------------------------------------
def test_ingest_rejecting_every_record_names_the_fields_and_keeps_nothing(
    tmp_path: Path,
) -> None:
    path = write_jsonl(tmp_path / "raw.jsonl", [{"title": "t", "text": good_text(i)}
                                                for i in range(5)])  # fmt: skip
    ws = Workspace(tmp_path / "ws")
    options = IngestOptions(text_field="body")
    with pytest.raises(InputError, match=r"rejected as missing_text.*fields title, text"):
        pipeline.ingest(ws, [str(path)], "c", options)
    assert not (ws.root / "corpora" / "c").exists()
    with ws.catalog() as con:
        assert con.execute("select count(*) from corpora").fetchone() == (0,)
        assert con.execute("select count(*) from sources").fetchone() == (0,)


def test_adding_an_all_rejected_file_leaves_the_corpus_as_it_was(
    ws: Workspace, tmp_path: Path
) -> None:
    before = queries.corpus_stats(ws, "pool")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"body": "x"}] * 4)
    with pytest.raises(InputError, match="fields body"):
        pipeline.ingest(ws, [str(bad)], "pool")
    after = queries.corpus_stats(ws, "pool")
    assert after == before and after["reconciles"]


def test_a_new_corpus_that_keeps_no_document_is_not_kept(tmp_path: Path) -> None:
    # Rejected for different reasons, so the first records alone do not decide it.
    records = [{"text": ""}, {"text": "   "}, {"nope": 1}]
    path = write_jsonl(tmp_path / "raw.jsonl", records)
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(InputError, match=r"all 3 records read were rejected.*not kept"):
        pipeline.ingest(ws, [str(path)], "c")
    assert queries.list_corpora(ws) == [] and not (ws.root / "corpora" / "c").exists()
    assert not (ws.root / "rejects" / "c").exists()


# -- materialize's message -----------------------------------------------------------------
def test_overwrite_never_replaces_a_directory_that_is_not_an_export(
    ws: Workspace, tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(InputError, match="not an earlier gristmill export; refusing"):
            checks.check_materialize(ws, "clean", mine, "parquet", overwrite)
    export = tmp_path / "export"
    pipeline.materialize(ws, "clean", str(export))
    with pytest.raises(InputError, match="pass --overwrite to replace it"):
        checks.check_materialize(ws, "clean", export, "parquet", False)
    checks.check_materialize(ws, "clean", export, "parquet", True)


# -- progress ----------------------------------------------------------------------------------
def test_no_progress_display_when_quiet_or_not_a_terminal(monkeypatch) -> None:
    assert cli._with_progress(progress.current_factory) is None  # stderr is captured here
    monkeypatch.setattr(type(cli.err), "is_terminal", property(lambda self: True))
    assert cli._with_progress(progress.current_factory) is not None
    assert cli._with_progress(progress.current_factory, quiet=True) is None


# -- the local server --------------------------------------------------------------------------
@pytest.fixture
def server(monkeypatch) -> types.SimpleNamespace:
    """A stand-in gristmill.server whose running URL the test sets."""
    state = types.SimpleNamespace(url=None)
    module = types.ModuleType("gristmill.server")
    module.running_api_url = lambda: state.url
    files = {"database": "/home/prefect.db", "log": "/home/server.log", "pid": 1}
    module.start = lambda port: {
        **files, "url": f"http://127.0.0.1:{port or 4300}", "already_running": False,
        "api_url": f"http://127.0.0.1:{port or 4300}/api", "startup_s": 12.5,
    }  # fmt: skip
    module.stop = lambda: {"stopped": True}
    module.status = lambda: {**files, "running": state.url is not None,
                             "url": state.url and state.url.removesuffix("/api")}  # fmt: skip
    module.ui_url = lambda: state.url and state.url.removesuffix("/api")
    monkeypatch.setitem(sys.modules, "gristmill.server", module)
    # `import gristmill.server as server` reads the package's attribute once it is imported.
    monkeypatch.setattr(gristmill, "server", module, raising=False)
    # `_connect` sets PREFECT_API_URL itself: set, then delete, so teardown removes what it set.
    monkeypatch.setenv("PREFECT_API_URL", "unset-by-the-fixture")
    monkeypatch.delenv("PREFECT_API_URL")
    return state


def test_a_running_server_is_used_without_any_variable(server, monkeypatch, capsys) -> None:
    import os

    server.url = "http://127.0.0.1:4300/api"
    assert cli._connect() == server.url and os.environ["PREFECT_API_URL"] == server.url
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("PREFECT_API_URL", "http://elsewhere/api")
    assert cli._connect() == "http://elsewhere/api"  # the user's own setting wins


def test_without_a_server_one_note_says_how_to_keep_runs(server, capsys) -> None:
    assert cli._connect() is None
    note = capsys.readouterr().err
    assert note.count("\n") == 1 and "gristmill server start" in note
    assert cli._connect(quiet=True) is None and capsys.readouterr().err == ""


def test_server_commands_and_ui_call_the_server_module(server) -> None:
    started = json.loads(invoke("server", "start", "--port", "4301", "--json").stdout)
    assert started["api_url"] == "http://127.0.0.1:4301/api"
    said = invoke("server", "start").stdout
    assert "started at http://127.0.0.1:4300 (pid 1, 12.5 s)" in said and "/home/prefect.db" in said
    assert invoke("server", "stop").stdout.strip() == "stopped"
    assert "not running" in invoke("server", "status").stdout
    assert "no gristmill server running" in invoke("ui", code=1).output
    server.url = "http://127.0.0.1:4300/api"
    assert invoke("ui").stdout.strip() == "http://127.0.0.1:4300"
    assert "running at http://127.0.0.1:4300 (pid 1)" in invoke("server", "status").stdout


# -- recipes against the workspace ------------------------------------------------------------
def test_a_recipe_may_read_what_the_workspace_holds(ws: Workspace, tmp_path: Path) -> None:
    from gristmill.errors import NotFoundError
    from gristmill.recipe import load_recipe

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "select:\n  - {name: again, selector: quality, corpus: pool, input: clean}\n"
        f"materialize:\n  - {{selection: half, out: {tmp_path / 'out'}}}\n"
        "experiment: {pool: pool, tokens: 1000, arms: [none, again, half, nosuch],\n"
        "             task: {kind: classification, corpus: pool}}\n",
        encoding="utf-8",
    )
    loaded = load_recipe(recipe)
    with pytest.raises(NotFoundError, match=r"experiment\.arms\[3\]: no selection named 'nosuch'"):
        checks.check_recipe(loaded, ws)
    loaded.experiment.arms = ["none", "again", "half"]
    checks.check_recipe(loaded, ws)  # `again` is made by the recipe, `half` is held
    with pytest.raises(NotFoundError, match=r"select\[0\]\.corpus: no corpus named 'pool'"):
        checks.check_recipe(loaded, Workspace(tmp_path / "new"))
