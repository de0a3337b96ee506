"""The gristmill command line: a thin layer over the flows and the read-only queries.

Exit codes: 0 success, 2 bad usage or bad input, 1 any other failure.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

# Before Prefect is imported: keep its console quiet (runs still log to its API and UI) and
# never let telemetry wait on a network that may not be there.
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Prefect's temporary API gives up after 20 s by default, too soon on a busy small machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeElapsedColumn
from rich.table import Table

from gristmill import progress
from gristmill.errors import GristmillError
from gristmill.storage import Workspace, queries
from gristmill.storage.readers import FORMATS, IngestOptions

app = typer.Typer(
    help="Select and prepare corpora for language models, and measure what the selection is worth.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

WorkspaceOption = Annotated[
    Path | None,
    typer.Option(
        "--workspace", "-w", envvar="GRISTMILL_WORKSPACE",
        help="workspace directory [default: ./gristmill-workspace]",
    ),
]  # fmt: skip
JsonOption = Annotated[bool, typer.Option("--json", help="print machine-readable JSON")]
RunnerOption = Annotated[str, typer.Option(help="task runner: threads, processes, ray or dask")]
AddressOption = Annotated[
    str | None,
    typer.Option(help="address of a running Ray head or Dask scheduler [default: start one]"),
]
WorkersOption = Annotated[int | None, typer.Option(help="parallel workers [default: CPU count]")]


DEBUG_VARIABLE = "GRISTMILL_DEBUG"


def _fail(message: str, code: int, error: BaseException) -> typer.Exit:
    """Print one error line; release what the error's frames hold; the exit to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    # A failed flow keeps its exception alive to interpreter exit (Prefect holds its state), and
    # the DuckDB objects in its frames with it; DuckDB's nanobind bindings would then print a
    # "leaked instances" report. Clearing the frames releases them now.
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__
    return typer.Exit(code)


def _interrupted(error: Exception) -> bool:
    """True for DuckDB's forms of Ctrl-C: a query the signal stopped raises RuntimeError."""
    import duckdb

    return isinstance(error, duckdb.InterruptException) or (
        type(error) is RuntimeError and str(error) == "Query interrupted"
    )


def handle_errors(command: F) -> F:
    """Print errors as one clear message and exit with their code: a gristmill error's own,
    130 on Ctrl-C, 1 for anything else (the traceback only with GRISTMILL_DEBUG=1)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # typer's own exits and usage errors
        except GristmillError as error:
            raise _fail(str(error), error.exit_code, error) from None
        except KeyboardInterrupt as error:
            raise _fail("interrupted", 130, error) from None
        except Exception as error:
            if _interrupted(error):
                raise _fail("interrupted", 130, error) from None
            message = f"internal error ({type(error).__name__}: {error})"
            if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
                traceback.print_exception(error, file=sys.stderr)
            else:
                message += f"; rerun with {DEBUG_VARIABLE}=1 for the traceback"
            raise _fail(message, 1, error) from None

    return wrapper  # type: ignore[return-value]


class _RichTask:
    def __init__(self, bar: Progress, description: str, total: float | None) -> None:
        self.bar = bar
        self.id = bar.add_task(description, total=total)

    def advance(self, amount: float = 1) -> None:
        self.bar.advance(self.id, amount)

    def close(self) -> None:
        self.bar.stop_task(self.id)  # freeze its elapsed time


def _with_progress(run: Callable[[], Any]) -> Any:
    """Run with rich progress bars on stderr for every long loop the flows report."""
    columns = ("[progress.description]{task.description}", BarColumn(), TaskProgressColumn(),
               TimeElapsedColumn())  # fmt: skip
    with (
        Progress(*columns, console=err, transient=False) as bar,
        progress.reporting(lambda d, t: _RichTask(bar, d, t)),
    ):
        return run()


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _table(rows: list[dict[str, Any]], title: str | None = None) -> None:
    if not rows:
        out.print(f"{title}: none" if title else "(no rows)")
        return
    table = Table(title=title)
    for column in rows[0]:
        table.add_column(str(column), overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    out.print(table)


def _ws(workspace: Path | None) -> Workspace:
    return Workspace(workspace)


def _recipe_workspace(loaded: Any, workspace: Path | None) -> Workspace:
    """The workspace a recipe writes (--workspace wins over the recipe's), checked up front."""
    ws = Workspace(str(workspace) if workspace else loaded.workspace)
    ws.check_writable()
    return ws


def _params(pairs: list[str] | None) -> dict[str, Any]:
    """k=v pairs; values parse as JSON when they can (numbers, booleans, null, lists)."""
    params: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not key=value", param_hint="--param")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


@app.command()
@handle_errors
def ingest(
    paths: Annotated[list[str], typer.Argument(help="files, directories or a HF dataset")],
    corpus: Annotated[str, typer.Option(help="corpus name")],
    workspace: WorkspaceOption = None,
    format: Annotated[str | None, typer.Option(help=f"one of {', '.join(FORMATS)}")] = None,
    text_field: Annotated[str, typer.Option(help="field with the text")] = "text",
    id_field: Annotated[str | None, typer.Option(help="field with a stable id")] = None,
    domain_field: Annotated[str | None, typer.Option(help="field with the domain")] = None,
    url_field: Annotated[str | None, typer.Option(help="URL field; its host is the domain")] = None,
    domain: Annotated[str | None, typer.Option(help="constant domain")] = None,
    txt_unit: Annotated[str, typer.Option(help="text: file, line or paragraph")] = "file",
    separator: Annotated[str | None, typer.Option(help="text: document separator")] = None,
    csv_header: Annotated[bool, typer.Option(help="CSV/TSV first row is a header")] = True,
    csv_quoting: Annotated[str, typer.Option(help="auto, minimal or none")] = "auto",
    hf_split: Annotated[str | None, typer.Option(help="HF dataset split")] = None,
    max_doc_bytes: Annotated[int, typer.Option(help="reject longer documents")] = 5_000_000,
    chunk_mb: Annotated[float, typer.Option(help="split big files into tasks of this size")] = 64,
    shard_mb: Annotated[float, typer.Option(help="text megabytes per output shard")] = 128,
    runner: RunnerOption = "threads",
    workers: WorkersOption = None,
    json_output: JsonOption = False,
) -> None:
    """Ingest raw files into a corpus of Parquet shards (resumable; bad records kept as rejects)."""
    from pydantic import ValidationError

    from gristmill.errors import InputError
    from gristmill.flows import ingest_flow, task_runner
    from gristmill.selectors.base import describe_validation_error

    try:
        options = IngestOptions(
            format=format, text_field=text_field, id_field=id_field, domain_field=domain_field,
            url_field=url_field, domain=domain, txt_unit=txt_unit, separator=separator,
            csv_header=csv_header, csv_quoting=csv_quoting, hf_split=hf_split,
            max_doc_bytes=max_doc_bytes, chunk_bytes=int(chunk_mb * 2**20),
            shard_bytes=int(shard_mb * 2**20),
        )  # fmt: skip
    except ValidationError as error:
        raise InputError(describe_validation_error(error, "--")) from None
    flow = ingest_flow.with_options(task_runner=task_runner(runner, workers))
    result = _with_progress(lambda: flow(str(_ws(workspace).root), paths, corpus, options))
    if json_output:
        _print_json(result)
        return
    _print_ingest(corpus, result)


def _print_ingest(corpus: str, result: dict[str, Any]) -> None:
    """One ingest's summary: what was added, the corpus now, rejects and skipped entries."""
    stats, added = result["stats"], result["added"]
    out.print(
        f"[bold]{corpus}[/]: +{added['documents']} documents, +{added['rejected']} rejected "
        f"({result['chunks_skipped']} of {result['chunks']} chunks already done). "
        f"Corpus: {stats['documents']} documents, {stats['text_bytes']:,} bytes, "
        f"{stats.get('n_domains', 0)} domains, {stats['rejected']} rejected"
    )
    if stats["rejects_by_reason"]:
        reasons = ", ".join(f"{k} {v}" for k, v in stats["rejects_by_reason"].items())
        out.print(f"rejects: {reasons} (see `gristmill sql 'select * from \"{corpus}__rejects\"'`)")
    if result["skipped_inputs"]:
        skipped = result["skipped_inputs"]
        named = ", ".join(f"{s['path']} ({s['reason']})" for s in skipped[:10])
        more = f" and {len(skipped) - 10} more (--json lists all)" if len(skipped) > 10 else ""
        out.print(f"skipped {len(skipped)} directory entries: {named}{more}", highlight=False)


@app.command()
@handle_errors
def corpora(workspace: WorkspaceOption = None, json_output: JsonOption = False) -> None:
    """List corpora with their document counts."""
    rows = queries.list_corpora(_ws(workspace))
    _print_json(rows) if json_output else _table(rows, "corpora")


@app.command()
@handle_errors
def stats(corpus: str, workspace: WorkspaceOption = None, json_output: JsonOption = False) -> None:
    """Documents, bytes, domains and rejects of a corpus (read = ingested + rejected)."""
    result = queries.corpus_stats(_ws(workspace), corpus)
    if json_output:
        _print_json(result)
        return
    check = "[green]yes[/]" if result["reconciles"] else "[red]NO[/]"
    out.print(
        f"[bold]{corpus}[/]: {result['records_read']} records read = {result['documents']} "
        f"documents + {result['rejected']} rejected (reconciles: {check}); "
        f"{result['text_bytes']:,} text bytes in {result['shards']} shards "
        f"({result['file_bytes']:,} on disk), {result['sources']} sources"
    )
    _table(
        result["domains"], f"domains (top {len(result['domains'])} of {result.get('n_domains', 0)})"
    )
    rejects = [{"reason": k, "count": v} for k, v in result["rejects_by_reason"].items()]
    _table(rejects, "rejects")


def _select_options(
    mode: str | None, threshold: float | None, seed: int, temperature: float,
    domain_weight: list[str] | None, tokenizer: str | None,
) -> Any:  # fmt: skip
    from pydantic import ValidationError

    from gristmill.errors import InputError
    from gristmill.selectors.base import describe_validation_error
    from gristmill.selectors.selection import SelectOptions

    try:
        weights = (
            {k: float(v) for k, v in _params(domain_weight).items()} if domain_weight else None
        )
    except (TypeError, ValueError):
        raise InputError(f"--domain-weight takes domain=number, got {domain_weight}") from None
    try:
        return SelectOptions(
            mode=mode, threshold=threshold, seed=seed, temperature=temperature,
            domain_weights=weights, tokenizer=tokenizer,
        )  # fmt: skip
    except ValidationError as error:
        raise InputError(describe_validation_error(error, "--")) from None


@app.command()
@handle_errors
def score(
    corpus: str,
    selector: Annotated[str, typer.Option(help="selector name (see `gristmill selectors`)")],
    param: Annotated[list[str] | None, typer.Option(help="selector setting key=value")] = None,
    target: Annotated[str | None, typer.Option(help="target corpus")] = None,
    workspace: WorkspaceOption = None,
    runner: RunnerOption = "threads",
    workers: WorkersOption = None,
    json_output: JsonOption = False,
) -> None:
    """Score every document of a corpus and store the scores (reused by later selects)."""
    from gristmill.flows import curate_flow, task_runner

    flow = curate_flow.with_options(task_runner=task_runner(runner, workers))
    result = _with_progress(
        lambda: flow(str(_ws(workspace).root), corpus, selector, params=_params(param),
                     target=target, score_only=True)
    )  # fmt: skip
    if json_output:
        _print_json(result)
        return
    out.print(
        f"{selector} scores for [bold]{corpus}[/] (config {result['config_hash']}): "
        f"{result['shards_scored']} shards scored, {result['shards_reused']} reused; "
        f'query them as "{corpus}__{result["signal"]}" in `gristmill sql`'
    )


@app.command()
@handle_errors
def select(
    corpus: str,
    selector: Annotated[str, typer.Option(help="selector name (see `gristmill selectors`)")],
    name: Annotated[str, typer.Option(help="name of the selection")],
    budget: Annotated[
        str | None, typer.Option(help="0.2, 20%, 10000docs, 5MB or 2Mtokens [default: none]")
    ] = None,
    param: Annotated[list[str] | None, typer.Option(help="selector setting key=value")] = None,
    target: Annotated[str | None, typer.Option(help="target corpus")] = None,
    input: Annotated[str | None, typer.Option(help="select from this selection's members")] = None,
    mode: Annotated[str | None, typer.Option(help="topk, threshold or gumbel")] = None,
    threshold: Annotated[float | None, typer.Option(help="threshold mode cut-off")] = None,
    seed: Annotated[int, typer.Option(help="seed for sampling")] = 0,
    temperature: Annotated[float, typer.Option(help="gumbel temperature")] = 1.0,
    domain_weight: Annotated[
        list[str] | None, typer.Option(help="domain=weight quota ('*' for the rest)")
    ] = None,
    tokenizer: Annotated[str | None, typer.Option(help="local HF tokenizer for tokens")] = None,
    workspace: WorkspaceOption = None,
    runner: RunnerOption = "threads",
    workers: WorkersOption = None,
    json_output: JsonOption = False,
) -> None:
    """Score (reusing stored scores) and select under a budget into a named selection."""
    from gristmill.flows import curate_flow, task_runner

    options = _select_options(mode, threshold, seed, temperature, domain_weight, tokenizer)
    flow = curate_flow.with_options(task_runner=task_runner(runner, workers))
    result = _with_progress(
        lambda: flow(str(_ws(workspace).root), corpus, selector, params=_params(param),
                     budget=budget, name=name, target=target, input_selection=input,
                     options=options)
    )  # fmt: skip
    if json_output:
        _print_json(result)
        return
    record = result["selection"]
    out.print(
        f"selection [bold]{name}[/]: kept {record['n_selected']} of {record['n_candidates']} "
        f"documents ({record['bytes_selected']:,} bytes) from {corpus} with {selector} "
        f"[{result['shards_scored']} shards scored, {result['shards_reused']} reused]"
    )
    summary = record["summary"]
    if summary["budget"]["exceeds_pool"]:
        out.print(f"[yellow]note:[/] budget {budget} is at least the whole pool: all kept")
    _table(summary["domains"], "per domain")
    if summary.get("top_reasons"):
        out.print("top reasons for dropping: "
                  + ", ".join(f"{r} ({n})" for r, n in summary["top_reasons"]))  # fmt: skip


@app.command()
@handle_errors
def selections(workspace: WorkspaceOption = None, json_output: JsonOption = False) -> None:
    """List selections."""
    rows = queries.list_selections(_ws(workspace))
    _print_json(rows) if json_output else _table(rows, "selections")


@app.command()
@handle_errors
def inspect(
    selection: str,
    sample: Annotated[int, typer.Option(help="documents to show of each kind")] = 5,
    seed: Annotated[int, typer.Option(help="which random sample")] = 0,
    ranked: Annotated[
        int, typer.Option(help="also show this many highest- and lowest-ranked documents")
    ] = 0,
    workspace: WorkspaceOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show kept and dropped documents with their scores and reasons, and what the selector
    explains about the selection."""
    from gristmill.pipeline.inspection import inspect_selection

    result = inspect_selection(_ws(workspace), selection, sample, seed, ranked=ranked)
    if json_output:
        _print_json(result)
        return
    record = result["selection"]
    out.print(
        f"[bold]{selection}[/]: {record['selector']} on {record['corpus']}"
        + (f" (from {record['parent']})" if record["parent"] else "")
        + f", budget {record['budget'] or 'none'}, mode {record['mode']}, "
        f"kept {record['n_selected']} of {record['n_candidates']}; {record['code_version']}"
    )
    _table(record["summary"]["domains"], "per domain")
    shown = {key for section in result["sections"] for key in section["shows"]}
    if "scoring" in record["summary"]:
        scoring = record["summary"]["scoring"]
        if isinstance(scoring, dict):  # less what a section shows as a table
            scoring = {k: v for k, v in scoring.items() if k not in shown}
        out.print(f"scoring: {json.dumps(scoring)}")
    for kind in ("kept", "dropped", "highest", "lowest"):
        if kind not in result:
            continue
        rows = [
            {"doc_id": r["doc_id"], "domain": r["domain"], "score": r["score"],
             "reasons": r["reasons"] or [], "text": r["text"]}
            for r in result[kind]
        ]  # fmt: skip
        _cells_table(rows, f"{kind} (sample)" if kind in ("kept", "dropped") else f"{kind} scored")
    for section in result["sections"]:
        for table in section["tables"]:
            _cells_table(table["rows"], table["title"])


def _cell(value: Any) -> Any:
    """A value as one table cell: floats to 4 places, text on one line, lists comma-separated."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, str):
        return value.replace("\n", " ")
    if isinstance(value, list | tuple):
        return ", ".join(str(_cell(v)) for v in value)
    return value


def _cells_table(rows: list[dict[str, Any]], title: str) -> None:
    """A table of rows whose values are made cells first."""
    _table([{k: _cell(v) for k, v in row.items()} for row in rows], title)


@app.command()
@handle_errors
def materialize(
    selection: str,
    out_dir: Annotated[Path, typer.Option("--out", help="output directory")],
    format: Annotated[str, typer.Option(help="parquet, jsonl or hf")] = "parquet",
    overwrite: Annotated[bool, typer.Option(help="replace a non-empty output directory")] = False,
    workspace: WorkspaceOption = None,
    json_output: JsonOption = False,
) -> None:
    """Write a selection's documents (in rank order) as Parquet, JSONL or a HF dataset."""
    from gristmill.flows import materialize_flow

    result = materialize_flow(str(_ws(workspace).root), selection, str(out_dir), format, overwrite)
    if json_output:
        _print_json(result)
        return
    out.print(
        f"wrote {result['documents']} documents of [bold]{selection}[/] to {result['out']} "
        f"({result['format']}: {', '.join(result['files'][:5])})"
    )


@app.command()
@handle_errors
def sql(
    query: str,
    limit: Annotated[int | None, typer.Option(help="at most this many rows (0: all)")] = 1000,
    workspace: WorkspaceOption = None,
    json_output: JsonOption = False,
) -> None:
    """Run one read-only SELECT; every corpus, signal, selection and rejects is a view."""
    result = queries.run_sql(_ws(workspace), query, limit)
    rows = [dict(zip(result["columns"], r, strict=True)) for r in result["rows"]]
    _print_json(rows) if json_output else _table(rows)
    if result["hidden"]:
        err.print(f"note: no view for {', '.join(result['hidden'])}: the name is already taken",
                  highlight=False)  # fmt: skip
    if result["truncated"]:
        err.print(f"(the first {limit} rows; there are more: raise --limit, or --limit 0 for all)",
                  highlight=False)  # fmt: skip


@app.command()
@handle_errors
def run(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML file")],
    workspace: WorkspaceOption = None,
    runner: RunnerOption = "threads",
    workers: WorkersOption = None,
    address: AddressOption = None,
    json_output: JsonOption = False,
) -> None:
    """Run a whole recipe (ingest, selector steps, materialisation, experiment) as one flow."""
    from gristmill.recipe import load_recipe

    loaded = load_recipe(recipe)
    _run_recipe(loaded, workspace, runner, workers, json_output, address)


def _run_recipe(
    loaded: Any,
    workspace: Path | None,
    runner: str,
    workers: int | None,
    json_output: bool,
    address: str | None = None,
) -> None:
    result = _recipe_result(loaded, workspace, runner, workers, address)
    if json_output:
        _print_json(result)
        return
    out.print(f"recipe [bold]{loaded.name}[/] in {result['workspace']}")
    for item in result["ingest"]:
        stats = item["stats"]
        reasons = ", ".join(f"{k} {v}" for k, v in stats["rejects_by_reason"].items())
        out.print(
            f"  ingest {item['corpus']}: {stats['documents']} documents, "
            f"{stats['rejected']} rejected ({reasons or 'none'})"
        )
    for item in result["select"]:
        record = item["selection"]
        out.print(
            f"  select {record['name']} ({record['selector']}): kept {record['n_selected']} of "
            f"{record['n_candidates']}"
        )
    for item in result["out"]:
        out.print(
            f"  materialize {item['selection']}: {item['documents']} documents -> {item['out']}"
        )
    if "experiment" in result:
        _print_experiment(result["experiment"])


def _recipe_result(
    loaded: Any, workspace: Path | None, runner: str, workers: int | None, address: str | None
) -> dict[str, Any]:
    """The recipe flow's result, run in the recipe's workspace with a progress display."""
    from gristmill.flows import run_recipe_flow

    root = str(_recipe_workspace(loaded, workspace).root)
    return _with_progress(lambda: run_recipe_flow(loaded, root, runner, workers, address))


def _print_experiment(result: dict[str, Any]) -> None:
    out.print(f"experiment [bold]{result['run_id']}[/]: {result['run_dir']}/report.md")
    _table(
        [{**r, "mean": f"{r['mean']:.4f}", "std": f"{r['std']:.4f}"} for r in result["table"]],
        "mean and standard deviation per arm",
    )


@app.command()
@handle_errors
def experiment(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML file with an experiment section")],
    workspace: WorkspaceOption = None,
    runner: RunnerOption = "threads",
    workers: WorkersOption = None,
    address: AddressOption = None,
    json_output: JsonOption = False,
) -> None:
    """Run the recipe's steps, then train and evaluate every arm of its experiment."""
    from gristmill.errors import InputError
    from gristmill.recipe import load_recipe

    loaded = load_recipe(recipe)
    if loaded.experiment is None:
        raise InputError(f"{recipe}: experiment: the recipe has no experiment section")
    result = _recipe_result(loaded, workspace, runner, workers, address)["experiment"]
    _print_json(result) if json_output else _print_experiment(result)


@app.command()
@handle_errors
def serve(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML file")],
    cron: Annotated[str | None, typer.Option(help='cron schedule, e.g. "0 3 * * *"')] = None,
    interval: Annotated[float | None, typer.Option(help="run every this many seconds")] = None,
    name: Annotated[str | None, typer.Option(help="deployment name [default: recipe name]")] = None,
    workspace: WorkspaceOption = None,
    runner: RunnerOption = "threads",
    workers: WorkersOption = None,
    address: AddressOption = None,
) -> None:
    """Serve the recipe as a Prefect deployment on a schedule until stopped (Ctrl-C)."""
    from gristmill.flows.serve import check_schedule, serve_recipe
    from gristmill.recipe import load_recipe

    check_schedule(cron, interval)
    loaded = load_recipe(recipe)  # refuse a bad recipe now, not at the first scheduled run
    root = str(_recipe_workspace(loaded, workspace).root)
    deployment = name or loaded.name
    api = os.environ.get("PREFECT_API_URL")
    err.print(
        f"serving [bold]{deployment}[/] ({cron or f'every {interval:g} s'}) on "
        f"{api or 'a temporary local API (set PREFECT_API_URL to watch runs in a UI)'}; "
        "Ctrl-C stops",
        highlight=False,
    )
    serve_recipe(
        str(recipe.resolve()), root, deployment, cron=cron, interval=interval,
        runner=runner, workers=workers, address=address,
    )  # fmt: skip


@app.command()
@handle_errors
def quickstart(
    workspace: WorkspaceOption = None,
    json_output: JsonOption = False,
) -> None:
    """Build a sample corpus offline (from Python's own docs) and run the quickstart recipe."""
    from importlib.resources import files

    from gristmill.recipe import load_recipe
    from gristmill.sample import build_sample

    ws = _ws(workspace)
    with ws.write_lock("quickstart"):
        pass  # a workspace from now on, so its sample data may go inside it
    build_sample(ws.root / "sample-data")
    recipe_file = ws.root / "quickstart.yaml"
    recipe_file.write_text(
        files("gristmill").joinpath("examples/quickstart.yaml").read_text(), encoding="utf-8"
    )
    loaded = load_recipe(recipe_file)
    _run_recipe(loaded, ws.root, "threads", None, json_output)
    if not json_output:
        out.print(
            f"\nnext: gristmill -h; gristmill stats sample -w {ws.root}; "
            f"gristmill inspect clean -w {ws.root}; recipe: {recipe_file}"
        )


zoo_app = typer.Typer(
    help="Model zoos: small models trained on mixtures of a pool's domains, each scored on a "
    "benchmark, for selectors that take a zoo parameter.",
    no_args_is_help=True,
)
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("build")
@handle_errors
def zoo_build(
    corpus: Annotated[str, typer.Argument(help="the pool whose domains the mixtures draw on")],
    name: Annotated[str, typer.Option(help="zoo name: written to <workspace>/zoos/<name>")],
    target_domain: Annotated[
        str | None, typer.Option(help="benchmark: held-out bits per byte of this pool domain")
    ] = None,
    target: Annotated[
        str | None, typer.Option(help="benchmark: bits per byte of this corpus's documents")
    ] = None,
    models: Annotated[int, typer.Option(help="number of models (at least 3)")] = 8,
    seed: Annotated[int, typer.Option(help="seed of the mixtures, sizes and training")] = 0,
    device: Annotated[str, typer.Option(help="auto (GPU when present), cpu or cuda")] = "auto",
    param: Annotated[
        list[str] | None,
        typer.Option(help="other zoo setting key=value (sizes, tokens, alpha, seq_len, ...)"),
    ] = None,
    workspace: WorkspaceOption = None,
    json_output: JsonOption = False,
) -> None:
    """Train small models on random mixtures of a pool's domains and score each on a benchmark."""
    from gristmill.flows import zoo_build_flow
    from gristmill.training.zoo import zoo_config

    config = zoo_config(
        {**_params(param), "models": models, "seed": seed, "device": device,
         "target_domain": target_domain, "target": target}
    )  # fmt: skip
    result = _with_progress(lambda: zoo_build_flow(str(_ws(workspace).root), corpus, name, config))
    if json_output:
        _print_json(result)
        return
    out.print(
        f"zoo [bold]{name}[/]: {len(result['models'])} models in {result['zoo']} "
        f"({result['wall_seconds']:.0f} s on {result['device']}); use it with "
        f"`gristmill select {corpus} --selector {result['selector']} --param zoo={name}`"
    )
    _table(
        [{k: m[k] for k in ("model", "size", "params", "tokens", "bits_per_byte", "error")}
         for m in result["models"]],
        "models",
    )  # fmt: skip


@app.command("selectors")
@handle_errors
def list_selectors(json_output: JsonOption = False) -> None:
    """List the selectors available (built-in and from installed plug-ins)."""
    from gristmill.selectors import available, get

    rows = []
    for name, target in sorted(available().items()):
        cls = get(name)
        rows.append({"selector": name, "class": target, "about": (cls.__doc__ or "").strip()})
    _print_json(rows) if json_output else _table(rows, "selectors")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
