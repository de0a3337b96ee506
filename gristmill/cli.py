"""The gristmill command line: a thin layer over the flows and the read-only queries.

Exit codes: 0 success, 2 bad usage or bad input, 1 any other failure.
"""

from __future__ import annotations

if __name__ == "__main__":  # `python -m gristmill.cli`: the light entry, before the imports below
    from gristmill.warm import main as _light_main

    _light_main()  # runs the command (on the warm runner, or via gristmill.cli) and exits

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from gristmill.errors import GristmillError, InputError
from gristmill.storage import Workspace, queries
from gristmill.storage.readers import FORMATS, IngestOptions
from gristmill.warm import prefect_defaults, use_local_server

prefect_defaults()  # before Prefect is imported (only the flows import it, later)

# -h as well as --help, on every command and sub-command (sub-apps inherit it and say it too).
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    help="Select and prepare corpora for language models, and measure what the selection is worth.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=HELP_OPTIONS,
)
# soft_wrap: messages are never broken mid-word (a hint stays one copyable command); tables
# still lay out to the terminal's width.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
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
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="no progress display and no notes on stderr")
]


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


def _with_progress(run: Callable[[], Any], quiet: bool = False) -> Any:
    """Run with rich progress bars on stderr for every long loop the flows report; none with
    `quiet` or when stderr is not a terminal (a log file gets no bars)."""
    from gristmill.console_progress import rich_progress

    with rich_progress(err, quiet):
        return run()


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _print_csv(columns: list[str], rows: list[list[Any]]) -> None:
    """Rows as CSV on stdout: a header, then one line per row; lists and objects as JSON."""
    import csv

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            "" if v is None else json.dumps(v, default=str) if isinstance(v, list | dict) else v
            for v in row
        )


def _shown(column: str, value: Any, raw: bool) -> str:
    """A table cell: counts with thousands separators (ids and `raw` tables as they are)."""
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool) and not raw:
        return str(value) if column.endswith("id") else f"{value:,}"
    return str(value)


def _fitted_widths(natural: list[int], available: int) -> list[int]:
    """Column widths within `available` characters: the widest columns are cut down first, to
    one common cap, so narrow columns keep their whole values."""
    if sum(natural) <= available:
        return natural
    low, high = 1, max(natural)
    while low < high:  # the largest cap under which the columns fit
        cap = (low + high + 1) // 2
        fits = sum(min(n, cap) for n in natural) <= available
        low, high = (cap, high) if fits else (low, cap - 1)
    return [min(n, max(low, 4)) for n in natural]


def _table(
    rows: list[dict[str, Any]], title: str | None = None, raw: bool = False, one_line: bool = False
) -> None:
    """Rows as a table on stdout; `one_line` cuts long cells short (…) to fit the terminal
    instead of folding them, so that a wide result stays one line per row."""
    if not rows:
        out.print(f"{title}: none" if title else "(no rows)")
        return
    columns = [str(c) for c in rows[0]]
    cells = [[_shown(c, v, raw) for c, v in zip(columns, row.values(), strict=True)]
             for row in rows]  # fmt: skip
    table = Table(title=title)
    if one_line:
        natural = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        borders = 3 * len(columns) + 1  # "│ " before each column, " " after, a last "│"
        for column, width in zip(columns, _fitted_widths(natural, out.width - borders),
                                 strict=True):  # fmt: skip
            table.add_column(column, overflow="ellipsis", no_wrap=True, width=width)
    else:
        for column in columns:
            table.add_column(column, overflow="fold")
    for row in cells:
        table.add_row(*row)
    out.print(table)


def _ws(workspace: Path | None) -> Workspace:
    return Workspace(workspace)


def _as_options(problems: str) -> str:
    """Validation problems named as the command-line options (`--txt_unit:` -> `--txt-unit:`)."""
    lines = []
    for line in problems.splitlines():
        key, sep, rest = line.partition(":")
        lines.append(key.replace("_", "-") + sep + rest)
    return "\n".join(lines)


def _checks() -> Any:
    """gristmill.pipeline.checks, imported by the commands that run flows (only they need it,
    and `import gristmill.cli` stays quick)."""
    from gristmill.pipeline import checks

    return checks


SERVER_HINT = "gristmill server start keeps history and gives a UI"


def _connect(quiet: bool = False) -> str | None:
    """Use the local server when one runs (its API URL); otherwise say, in one line on stderr,
    that runs are not kept and how to keep them (not with `quiet`)."""
    url = use_local_server()
    if url is None and not quiet:
        err.print(f"note: no gristmill server running: runs are not kept ({SERVER_HINT})",
                  highlight=False)  # fmt: skip
    return url


# The command line of this process when it came through main() (not CliRunner): the command
# the warm runner may take over.
_entry_argv: list[str] | None = None


def _hand_over_to_runner() -> None:
    """Run the whole command on the server's warm runner when one serves this process (it
    has Prefect and the flows imported) and exit with its code; else return and run it here."""
    if _entry_argv is None:
        return
    from gristmill.warm import hand_over

    code = hand_over(_entry_argv)
    if code is not None:
        raise typer.Exit(code)


def _flows(quiet: bool = False) -> Any:
    """The flows package, imported only once every check has passed (Prefect starts up here),
    connected to the local server when one runs; or the command run on the warm runner."""
    _connect(quiet)
    _hand_over_to_runner()
    import gristmill.flows

    return gristmill.flows


def _on_runner(flows: Any, flow: Any, runner: str, workers: int | None) -> Any:
    """The flow on the named task runner; itself for the default one (threads, one worker per
    CPU), which it has already: a copy would redo its parameter schema (0.1-0.2 CPU-s)."""
    if runner == "threads" and (workers or os.cpu_count()) == os.cpu_count():
        return flow
    return flow.with_options(task_runner=flows.task_runner(runner, workers))


def _recipe_workspace(loaded: Any, workspace: Path | None) -> Workspace:
    """The workspace a recipe writes (--workspace wins over the recipe's), checked up front."""
    ws = Workspace(str(workspace) if workspace else loaded.workspace)
    ws.check_writable()
    return ws


def _params(pairs: list[str] | None, option: str = "--param") -> dict[str, Any]:
    """k=v pairs; values parse as JSON when they can (numbers, booleans, null, lists)."""
    params: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"{option}: {pair!r} is not key=value")
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
    extractor: Annotated[
        str, typer.Option(help="WARC: main-text extractor, trafilatura or resiliparse (faster)")
    ] = "trafilatura",
    chunk_mb: Annotated[float, typer.Option(help="split big files into tasks of this size")] = 64,
    shard_mb: Annotated[float, typer.Option(help="text megabytes per output shard")] = 128,
    runner: RunnerOption = "threads",
    workers: WorkersOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Ingest raw files into a corpus of Parquet shards (resumable; bad records kept as rejects)."""
    from pydantic import ValidationError

    from gristmill.selectors.base import describe_validation_error

    try:
        options = IngestOptions(
            format=format, text_field=text_field, id_field=id_field, domain_field=domain_field,
            url_field=url_field, domain=domain, txt_unit=txt_unit, separator=separator,
            csv_header=csv_header, csv_quoting=csv_quoting, hf_split=hf_split,
            max_doc_bytes=max_doc_bytes, extractor=extractor, chunk_bytes=int(chunk_mb * 2**20),
            shard_bytes=int(shard_mb * 2**20),
        )  # fmt: skip
    except ValidationError as error:
        raise InputError(_as_options(describe_validation_error(error, "--"))) from None
    ws = _ws(workspace)
    _checks().check_runner(runner)
    _checks().check_ingest(ws, paths, corpus, options)
    flows = _flows(quiet)
    flow = _on_runner(flows, flows.ingest_flow, runner, workers)
    result = _with_progress(lambda: flow(str(ws.root), paths, corpus, options), quiet)
    if json_output:
        _print_json(result)
        return
    _print_ingest(corpus, result)


def _print_ingest(corpus: str, result: dict[str, Any]) -> None:
    """One ingest's summary: what was added, the corpus now, rejects and skipped entries."""
    stats, added = result["stats"], result["added"]
    out.print(
        f"[bold]{corpus}[/]: +{added['documents']:,} documents, +{added['rejected']:,} rejected "
        f"({result['chunks_skipped']:,} of {result['chunks']:,} chunks already done). "
        f"Corpus: {stats['documents']:,} documents, {stats['text_bytes']:,} bytes, "
        f"{stats.get('n_domains', 0):,} domains, {stats['rejected']:,} rejected"
    )
    if stats["rejects_by_reason"]:
        reasons = ", ".join(f"{k} {v:,}" for k, v in stats["rejects_by_reason"].items())
        out.print(f"rejects: {reasons} (see `gristmill sql 'select * from \"{corpus}__rejects\"'`)")
    if stats.get("skipped_by_reason"):  # records that are no documents by design (WARC requests)
        reasons = ", ".join(f"{k} {v:,}" for k, v in stats["skipped_by_reason"].items())
        out.print(f"skipped records (not documents): {reasons}", highlight=False)
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
    from gristmill.pipeline.inspection import corpus_report

    result = corpus_report(_ws(workspace), corpus)
    if json_output:
        _print_json(result)
        return
    check = "[green]yes[/]" if result["reconciles"] else "[red]NO[/]"
    out.print(
        f"[bold]{corpus}[/]: {result['records_read']:,} records read = {result['documents']:,} "
        f"documents + {result['rejected']:,} rejected"
        + (f" + {result['skipped']:,} skipped" if result.get("skipped") else "")
        + f" (reconciles: {check}); {result['text_bytes']:,} text bytes in "
        f"{result['shards']:,} shards ({result['file_bytes']:,} on disk), "
        f"{result['sources']:,} sources"
    )
    _table(
        result["domains"],
        f"domains (top {len(result['domains'])} of {result.get('n_domains', 0):,})",
    )
    rejects = [{"reason": k, "count": v} for k, v in result["rejects_by_reason"].items()]
    _table(rejects, "rejects")
    if result.get("skipped_by_reason"):
        skips = [{"reason": k, "count": v} for k, v in result["skipped_by_reason"].items()]
        _table(skips, "skipped (records that are not documents)")
    identified = result["languages"]
    if identified["languages"]:
        _table(identified["languages"], f"languages ({identified['shards_identified']:,} of "
               f"{identified['shards']:,} shards identified)")  # fmt: skip


def _select_options(
    mode: str | None, threshold: float | None, seed: int, temperature: float,
    domain_weight: list[str] | None, tokenizer: str | None,
) -> Any:  # fmt: skip
    from pydantic import ValidationError

    from gristmill.selectors.base import describe_validation_error
    from gristmill.selectors.selection import SelectOptions

    try:
        weights = (
            {k: float(v) for k, v in _params(domain_weight, "--domain-weight").items()}
            if domain_weight
            else None
        )
    except (TypeError, ValueError):
        raise InputError(f"--domain-weight takes domain=number, got {domain_weight}") from None
    try:
        return SelectOptions(
            mode=mode, threshold=threshold, seed=seed, temperature=temperature,
            domain_weights=weights, tokenizer=tokenizer,
        )  # fmt: skip
    except ValidationError as error:
        raise InputError(_as_options(describe_validation_error(error, "--"))) from None


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
    quiet: QuietOption = False,
) -> None:
    """Score every document of a corpus and store the scores (reused by later selects)."""
    ws, params = _ws(workspace), _params(param)
    _checks().check_runner(runner)
    _checks().check_curate(ws, corpus, selector, params=params, target=target)
    flows = _flows(quiet)
    flow = _on_runner(flows, flows.curate_flow, runner, workers)
    result = _with_progress(
        lambda: flow(str(ws.root), corpus, selector, params=params, target=target,
                     score_only=True),
        quiet,
    )  # fmt: skip
    if json_output:
        _print_json(result)
        return
    out.print(
        f"{selector} scores for [bold]{corpus}[/] (config {result['config_hash']}): "
        f"{result['shards_scored']:,} shards scored, {result['shards_reused']:,} reused; "
        f'query them as "{corpus}__{result["signal"]}" in `gristmill sql`',
        highlight=False,
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
    replace: Annotated[
        bool, typer.Option(help="replace an existing selection of this name")
    ] = False,
    workspace: WorkspaceOption = None,
    runner: RunnerOption = "threads",
    workers: WorkersOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Score (reusing stored scores) and select under a budget into a named selection."""
    options = _select_options(mode, threshold, seed, temperature, domain_weight, tokenizer)
    ws, params = _ws(workspace), _params(param)
    _checks().check_runner(runner)
    _checks().check_curate(
        ws, corpus, selector, params=params, budget=budget, name=name, target=target,
        input_selection=input, options=options, replace=replace,
    )  # fmt: skip
    flows = _flows(quiet)
    flow = _on_runner(flows, flows.curate_flow, runner, workers)
    result = _with_progress(
        lambda: flow(str(ws.root), corpus, selector, params=params, budget=budget, name=name,
                     target=target, input_selection=input, options=options),
        quiet,
    )  # fmt: skip
    if json_output:
        _print_json(result)
        return
    record = result["selection"]
    out.print(
        f"selection [bold]{name}[/]: kept {record['n_selected']:,} of "
        f"{record['n_candidates']:,} documents ({record['bytes_selected']:,} bytes) from "
        f"{corpus} with {selector} [{result['shards_scored']:,} shards scored, "
        f"{result['shards_reused']:,} reused]" + _unchanged_note(record),
        highlight=False,
    )
    summary = record["summary"]
    used = _budget_used(summary["budget"])
    if used:
        out.print(used, highlight=False)
    if summary["budget"]["exceeds_pool"]:
        out.print(f"[yellow]note:[/] budget {budget} is at least the whole pool: all kept")
    _table(summary["domains"], "per domain")
    if summary.get("top_reasons"):
        out.print("top reasons for dropping: "
                  + ", ".join(f"{r} ({n})" for r, n in summary["top_reasons"]))  # fmt: skip


@app.command()
@handle_errors
def transform(
    corpus: str,
    with_: Annotated[
        str, typer.Option("--with", help="transforms in order, e.g. pii,normalize,lines")
    ],
    name: Annotated[str, typer.Option(help="name of the derived corpus")],
    param: Annotated[
        list[str] | None, typer.Option(help="transform setting name.key=value (lines.min_words=3)")
    ] = None,
    workspace: WorkspaceOption = None,
    runner: RunnerOption = "threads",
    workers: WorkersOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Rewrite a corpus's text (PII masked, text repaired, junk lines removed) into a derived
    corpus that keeps every document's id; cached and resumable per shard."""
    from gristmill.transforms.base import parse_specs, with_params

    ws = _ws(workspace)
    specs = with_params(parse_specs(with_), _params(param))
    _checks().check_runner(runner)
    _checks().check_transform(ws, corpus, specs, name)
    flows = _flows(quiet)
    flow = _on_runner(flows, flows.transform_flow, runner, workers)
    chain = [spec.model_dump() for spec in specs]
    result = _with_progress(lambda: flow(str(ws.root), corpus, chain, name), quiet)
    if json_output:
        _print_json(result)
        return
    _print_transform(result)


def _print_transform(result: dict[str, Any]) -> None:
    """One transform step's summary: documents kept and dropped, what each transform changed."""
    names = ",".join(t["name"] for t in result["transforms"])
    out.print(
        f"[bold]{result['corpus']}[/] from {result['parent']} with {names}: "
        f"{result['documents']:,} of {result['documents_read']:,} documents kept "
        f"({result['shards_done']:,} shards rewritten, {result['shards_reused']:,} reused)",
        highlight=False,
    )
    rows = [
        {"transform": name, "documents changed": f"{result['changed_documents'].get(name, 0):,}",
         "changes": ", ".join(f"{k} {v:,}" for k, v in counts.items())}
        for name, counts in result["changes"].items()
    ]  # fmt: skip
    _table(rows, "changes")
    if result["dropped_by_reason"]:
        reasons = ", ".join(f"{k} {v:,}" for k, v in result["dropped_by_reason"].items())
        out.print(f"dropped (kept as rejects): {reasons}", highlight=False)


_UNIT_NAMES = {"docs": "documents", "bytes": "bytes", "tokens": "tokens"}


def _amount(value: float) -> str:
    """A budget amount: whole numbers with separators, others to one decimal place."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _unchanged_note(record: dict[str, Any]) -> str:
    """` (unchanged since <when>)` for a selection whose inputs had not changed, else ``."""
    if not record.get("unchanged"):
        return ""
    return f" (unchanged since {str(record['created_at'])[:19]}: nothing it depends on changed)"


def _budget_used(budget: dict[str, Any]) -> str | None:
    """`budget 2Mtokens: used 1,999,761 of 2,000,000 tokens`, from a selection summary's
    budget (None without a budget)."""
    if budget.get("allowed") is None:
        return None
    unit = _UNIT_NAMES.get(budget["counts"], budget["counts"])
    return (
        f"budget {budget['budget']}: used {_amount(budget['used'])} of "
        f"{_amount(budget['allowed'])} {unit} (pool {_amount(budget['pool'])})"
    )


@app.command()
@handle_errors
def selections(workspace: WorkspaceOption = None, json_output: JsonOption = False) -> None:
    """List selections: what each was selected from and what it kept.

    "from" is the corpus, or the selection it narrowed (--input); --json gives every field."""
    rows = queries.list_selections(_ws(workspace))
    if json_output:
        _print_json(rows)
        return
    shown = [
        {"name": r["name"],
         "from": r["parent"] or r["corpus"],  # a parent selection is of the same corpus
         "selector": r["selector"], "budget": r["budget"] or "none",
         "kept": f"{r['n_selected']:,} of {r['n_candidates']:,}",
         "created": str(r["created_at"])[:16]}
        for r in rows
    ]  # fmt: skip
    _table(shown, "selections", one_line=True)


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
    """Show kept and dropped documents with scores and reasons, and the selector's explanation;
    for a corpus a transform made, documents before and after."""
    from gristmill.errors import NotFoundError
    from gristmill.pipeline.inspection import inspect_selection

    ws = _ws(workspace)
    try:
        result = inspect_selection(ws, selection, sample, seed, ranked=ranked)
    except NotFoundError:
        if not _derived(ws, selection):
            raise
        _inspect_transform(ws, selection, sample, seed, json_output)
        return
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


def _derived(ws: Workspace, name: str) -> bool:
    """True when `name` is a corpus a transform made."""
    from gristmill.errors import NotFoundError
    from gristmill.pipeline.transformation import lineage

    try:
        return bool(lineage(ws, name))
    except NotFoundError:
        return False


def _inspect_transform(ws: Workspace, corpus: str, sample: int, seed: int, as_json: bool) -> None:
    """A derived corpus's transforms and documents before and after them."""
    from gristmill.pipeline.transformation import transform_examples

    result = transform_examples(ws, corpus, sample, seed=seed)
    if as_json:
        _print_json(result)
        return
    record = result["corpus"]
    chain = ", ".join(t["name"] for t in record["transforms"])
    out.print(f"[bold]{corpus}[/]: made from {record['parent']} by {chain}; "
              f"{record['code_version']}", highlight=False)  # fmt: skip
    _cells_table(result["changed"], "changed (sample)")
    _cells_table(result["dropped"], "dropped (sample)")


def _cell(value: Any) -> Any:
    """A value as one table cell: floats to 4 places, text on one line, lists comma-separated,
    mappings as `key value` pairs (`lines (removed_lines 3, repeated 1)`)."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, str):
        return value.replace("\n", " ")
    if isinstance(value, list | tuple):
        return ", ".join(str(_cell(v)) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} ({_cell(v)})" if isinstance(v, dict) else f"{k} {_cell(v)}"
                         for k, v in value.items())  # fmt: skip
    return value


def _cells_table(rows: list[dict[str, Any]], title: str) -> None:
    """A table of rows whose values are made cells first."""
    _table([{k: _cell(v) for k, v in row.items()} for row in rows], title)


@app.command()
@handle_errors
def materialize(
    selection: str,
    out_dir: Annotated[Path, typer.Option("--out", help="output directory")],
    format: Annotated[str, typer.Option(help="parquet, jsonl, hf or tokens")] = "parquet",
    overwrite: Annotated[
        bool,
        typer.Option(help="replace an earlier gristmill export there (never any other directory)"),
    ] = False,
    tokenizer: Annotated[
        str | None, typer.Option(help="tokens: a local tokenizer directory or workspace model")
    ] = None,
    bos: Annotated[bool, typer.Option(help="tokens: BOS before each document")] = False,
    eos: Annotated[bool, typer.Option(help="tokens: EOS after each document")] = True,
    shuffle_seed: Annotated[
        int | None,
        typer.Option(help="tokens: shuffle documents with this seed [default: rank order]"),
    ] = None,
    heldout_fraction: Annotated[
        float, typer.Option(help="tokens: share of documents (by doc_id hash) in a held-out split")
    ] = 0.0,
    docs_per_shard: Annotated[int, typer.Option(help="tokens: documents per shard")] = 50_000,
    workspace: WorkspaceOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Write a selection's documents (in rank order) as Parquet, JSONL, a HF dataset, or token
    shards a trainer reads directly (nanoGPT memmap, Megatron .bin/.idx)."""
    ws = _ws(workspace)
    _checks().check_materialize(ws, selection, out_dir, format, overwrite, tokenizer)
    tokens = None
    if format == "tokens":
        tokens = {
            "tokenizer": tokenizer, "bos": bos, "eos": eos, "shuffle_seed": shuffle_seed,
            "heldout_fraction": heldout_fraction, "docs_per_shard": docs_per_shard,
        }  # fmt: skip
    flows = _flows(quiet)
    result = _with_progress(
        lambda: flows.materialize_flow(str(ws.root), selection, str(out_dir), format, overwrite,
                                       tokens),
        quiet,
    )  # fmt: skip
    if json_output:
        _print_json(result)
        return
    what = f"{result['documents']:,} documents"
    if "tokens" in result:
        what += f" ({result['tokens']:,} tokens)"
    out.print(
        f"wrote {what} of [bold]{selection}[/] to {result['out']} "
        f"({result['format']}: {', '.join(result['files'][:5])})",
        highlight=False,
    )


@app.command()
@handle_errors
def sql(
    query: str,
    limit: Annotated[int | None, typer.Option(help="at most this many rows (0: all)")] = 1000,
    workspace: WorkspaceOption = None,
    json_output: JsonOption = False,
    csv_output: Annotated[bool, typer.Option("--csv", help="print CSV with a header row")] = False,
) -> None:
    """Run one read-only SELECT; every corpus, signal, selection and rejects is a view.

    The table shows values as DuckDB gives them, long ones cut short to fit the terminal;
    --csv and --json give them whole."""
    if json_output and csv_output:
        raise InputError("--json and --csv: choose one")
    result = queries.run_sql(_ws(workspace), query, limit)
    rows = [dict(zip(result["columns"], r, strict=True)) for r in result["rows"]]
    if json_output:
        _print_json(rows)
    elif csv_output:
        _print_csv(result["columns"], result["rows"])
    else:
        _table([{k: _cell(v) for k, v in row.items()} for row in rows], raw=True, one_line=True)
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
    quiet: QuietOption = False,
) -> None:
    """Run a whole recipe (ingest, selector steps, materialisation, experiment) as one flow."""
    from gristmill.recipe import load_recipe

    loaded = load_recipe(recipe)
    _run_recipe(loaded, workspace, runner, workers, json_output, address, quiet)


def _run_recipe(
    loaded: Any,
    workspace: Path | None,
    runner: str,
    workers: int | None,
    json_output: bool,
    address: str | None = None,
    quiet: bool = False,
) -> None:
    result = _recipe_result(loaded, workspace, runner, workers, address, quiet)
    if json_output:
        _print_json(result)
        return
    out.print(f"recipe [bold]{loaded.name}[/] in {result['workspace']}", highlight=False)
    for item in result["ingest"]:
        stats = item["stats"]
        reasons = ", ".join(f"{k} {v:,}" for k, v in stats["rejects_by_reason"].items())
        out.print(
            f"  ingest {item['corpus']}: {stats['documents']:,} documents, "
            f"{stats['rejected']:,} rejected ({reasons or 'none'})",
            highlight=False,
        )
    for item in result.get("transform", []):
        out.print(
            f"  transform {item['parent']} -> {item['corpus']}: {item['documents']:,} of "
            f"{item['documents_read']:,} documents kept",
            highlight=False,
        )
    for item in result["select"]:
        record = item["selection"]
        used = _budget_used(record["summary"]["budget"])
        out.print(
            f"  select {record['name']} ({record['selector']}): kept {record['n_selected']:,} of "
            f"{record['n_candidates']:,}" + (f"; {used}" if used else "") + _unchanged_note(record),
            highlight=False,
        )
    for item in result["out"]:
        out.print(
            f"  materialize {item['selection']}: {item['documents']:,} documents -> {item['out']}",
            highlight=False,
        )
    if "experiment" in result:
        _print_experiment(result["experiment"])


def _recipe_result(
    loaded: Any,
    workspace: Path | None,
    runner: str,
    workers: int | None,
    address: str | None,
    quiet: bool = False,
) -> dict[str, Any]:
    """The recipe flow's result, run in the recipe's workspace with a progress display, once
    the whole recipe has been checked against the workspace."""
    ws = _recipe_workspace(loaded, workspace)
    _checks().check_runner(runner, address)
    _checks().check_recipe(loaded, ws)
    flows = _flows(quiet)
    root = str(ws.root)
    return _with_progress(
        lambda: flows.run_recipe_flow(loaded, root, runner, workers, address, checked=True),
        quiet,
    )


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
    quiet: QuietOption = False,
) -> None:
    """Run the recipe's steps, then train and evaluate every arm of its experiment."""
    from gristmill.recipe import load_recipe

    loaded = load_recipe(recipe)
    if loaded.experiment is None:
        raise InputError(f"{recipe}: experiment: the recipe has no experiment section")
    result = _recipe_result(loaded, workspace, runner, workers, address, quiet)["experiment"]
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
    """Serve the recipe as a Prefect deployment on a schedule until stopped (Ctrl-C or SIGTERM;
    its schedule is paused on exit)."""
    from gristmill.recipe import load_recipe

    loaded = load_recipe(recipe)  # refuse a bad recipe now, not at the first scheduled run
    ws = _recipe_workspace(loaded, workspace)
    _checks().check_runner(runner, address)
    _checks().check_recipe(loaded, ws)
    root = str(ws.root)
    deployment = name or loaded.name
    use_local_server()  # serve itself starts the local server when none runs
    from gristmill.flows.serve import check_schedule, serve_recipe

    check_schedule(cron, interval)
    err.print(
        f"serving [bold]{deployment}[/] ({cron or f'every {interval:g} s'}); "
        "Ctrl-C or SIGTERM stops",
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
    quiet: QuietOption = False,
) -> None:
    """Build a sample corpus offline (from Python's own docs) and run the quickstart recipe."""
    from importlib.resources import files

    from gristmill.recipe import load_recipe
    from gristmill.sample import build_sample

    global _entry_argv
    _entry_argv = None  # here, not on the runner: its child would build the sample again
    ws = _ws(workspace)
    with ws.write_lock("quickstart"):
        pass  # a workspace from now on, so its sample data may go inside it
    build_sample(ws.root / "sample-data")
    recipe_file = ws.root / "quickstart.yaml"
    recipe_file.write_text(
        files("gristmill").joinpath("examples/quickstart.yaml").read_text(), encoding="utf-8"
    )
    loaded = load_recipe(recipe_file)
    _run_recipe(loaded, ws.root, "threads", None, json_output, quiet=quiet)
    if not json_output:
        out.print(
            f"\nnext: gristmill -h; gristmill stats sample -w {ws.root}; "
            f"gristmill inspect clean -w {ws.root}; recipe: {recipe_file}",
            highlight=False,
        )


zoo_app = typer.Typer(
    help="Model zoos: small models trained on mixtures of a pool's domains, each scored on a "
    "benchmark, for selectors that take a zoo parameter.",
    no_args_is_help=True,
    context_settings=HELP_OPTIONS,
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
    quiet: QuietOption = False,
) -> None:
    """Train small models on random mixtures of a pool's domains and score each on a benchmark."""
    from gristmill.storage.workspace import validate_name
    from gristmill.training.zoo import zoo_config

    config = zoo_config(
        {**_params(param), "models": models, "seed": seed, "device": device,
         "target_domain": target_domain, "target": target}
    )  # fmt: skip
    ws = _ws(workspace)
    validate_name("zoo", name)
    for needed in (corpus, target):
        if needed is not None:
            _checks().check_corpus(ws, needed)
    flows = _flows(quiet)
    result = _with_progress(lambda: flows.zoo_build_flow(str(ws.root), corpus, name, config), quiet)
    if json_output:
        _print_json(result)
        return
    out.print(
        f"zoo [bold]{name}[/]: {len(result['models'])} models in {result['zoo']} "
        f"({result['wall_seconds']:.0f} s on {result['device']}); use it with "
        f"`gristmill select {corpus} --selector {result['selector']} --param zoo={name}`",
        highlight=False,
    )
    _table(
        [{k: m[k] for k in ("model", "size", "params", "tokens", "bits_per_byte", "error")}
         for m in result["models"]],
        "models",
    )  # fmt: skip


@app.command("selectors")
@handle_errors
def list_selectors(
    name: Annotated[
        str | None, typer.Argument(help="show this selector's parameters [default: list all]")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """List the selectors, or show one selector's parameters, defaults and what they do.

    The list has the built-in selectors and those of installed plug-ins."""
    from gristmill.selectors import available, get

    if name is not None:
        _show_selector(get(name), json_output)
        return
    rows = []
    for selector, target in sorted(available().items()):
        cls = get(selector)
        rows.append({"selector": selector, "class": target, "about": (cls.__doc__ or "").strip()})
    _print_json(rows) if json_output else _table(rows, "selectors")


def _show_selector(cls: Any, json_output: bool) -> None:
    """A selector's description, defaults and parameters (from its config's fields)."""
    rows = []
    for field_name, info in cls.Config.model_fields.items():
        required = info.is_required()
        default = "(required)" if required else info.get_default(call_default_factory=True)
        rows.append({
            "param": field_name,
            "type": _type_name(info.annotation),
            "default": default,
            "description": info.description or "",
        })  # fmt: skip
    about = " ".join((cls.__doc__ or "").split())
    if json_output:
        _print_json({"selector": cls.name, "about": about, "default_mode": cls.default_mode,
                     "requires_target": cls.requires_target, "params": rows})  # fmt: skip
        return
    target = "; needs --target" if cls.requires_target else ""
    out.print(f"[bold]{cls.name}[/]: {about} (default mode {cls.default_mode}{target})",
              highlight=False)  # fmt: skip
    shown = [{**row, "default": json.dumps(row["default"], default=str)
              if row["default"] != "(required)" else row["default"]} for row in rows]  # fmt: skip
    _table(shown, "parameters (--param key=value)")
    out.print(f"example: gristmill select CORPUS --selector {cls.name} --name NAME "
              "--budget 20% --param key=value", highlight=False)  # fmt: skip


def _type_name(annotation: Any) -> str:
    """A parameter's type as written in Python (`int`, `str | None`, `Literal['a', 'b']`)."""
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


drop_app = typer.Typer(
    help="Remove a corpus or a selection with its files (refused while something uses it).",
    no_args_is_help=True,
    context_settings=HELP_OPTIONS,
)
app.add_typer(drop_app, name="drop")
CascadeOption = Annotated[
    bool, typer.Option("--cascade", help="also drop what uses it (selections, stored signals)")
]


def _print_dropped(dropped: Any, json_output: bool) -> None:
    import dataclasses

    if json_output:
        _print_json(dataclasses.asdict(dropped))
        return
    parts = [f"corpus {dropped.corpus}"] if dropped.corpus else []
    if dropped.selections:
        parts.append(f"selections {', '.join(dropped.selections)}")
    if dropped.signals:
        parts.append(f"stored signals {', '.join(dropped.signals)}")
    out.print(f"dropped {'; '.join(parts)} ({len(dropped.directories)} directories removed)",
              highlight=False)  # fmt: skip


@drop_app.command("corpus")
@handle_errors
def drop_corpus_command(
    name: Annotated[str, typer.Argument(help="the corpus")],
    cascade: CascadeOption = False,
    workspace: WorkspaceOption = None,
    json_output: JsonOption = False,
) -> None:
    """Remove a corpus with its shards and rejects (refused while anything uses it).

    Its selections and stored signals use it; --cascade drops them too."""
    from gristmill.storage.drop import drop_corpus

    _print_dropped(drop_corpus(_ws(workspace), name, cascade), json_output)


@drop_app.command("selection")
@handle_errors
def drop_selection_command(
    name: Annotated[str, typer.Argument(help="the selection")],
    cascade: CascadeOption = False,
    workspace: WorkspaceOption = None,
    json_output: JsonOption = False,
) -> None:
    """Remove a selection with its members (refused while selections are made from it).

    Selections made from it (--input) use it; --cascade drops them too. Exports written by
    materialize are left alone."""
    from gristmill.storage.drop import drop_selection

    _print_dropped(drop_selection(_ws(workspace), name, cascade), json_output)


server_app = typer.Typer(
    help="A local Prefect server on 127.0.0.1 that keeps the history of runs and serves the UI; "
    "while it runs every gristmill command uses it.",
    no_args_is_help=True,
    context_settings=HELP_OPTIONS,
)
app.add_typer(server_app, name="server")


def _server() -> Any:
    """gristmill.server, imported by the commands that use it."""
    import gristmill.server as server

    return server


def _print_state(state: dict[str, Any], json_output: bool, action: str) -> None:
    """A server's state: one line of what happened, then where its files are."""
    if json_output:
        _print_json(state)
        return
    if action == "start" and state.get("already_running"):
        line = f"already running at {state['url']} (pid {state['pid']})"
    elif action == "start":
        line = f"started at {state['url']} (pid {state['pid']}, {state['startup_s']:g} s)"
    elif action == "stop":
        line = "stopped" if state.get("stopped") else "no gristmill server is running"
    elif state.get("running"):
        line = f"running at {state['url']} (pid {state['pid']})"
    elif state.get("starting"):
        line = f"starting (pid {state['pid']})"
    else:
        line = "not running" + (" (stale state of a dead server removed)"
                                if state.get("stale_cleaned") else "")  # fmt: skip
    out.print(line, highlight=False)
    if action != "stop":
        out.print(f"database: {state['database']}\nlog: {state['log']}", highlight=False)
    if action != "stop" and "runner" in state:
        out.print(f"runner: {_runner_line(state['runner'])}", highlight=False)
    if action == "status" and not state.get("running"):
        out.print("`gristmill server start` starts it", highlight=False)


def _runner_line(runner: dict[str, Any]) -> str:
    """What the warm runner does for commands, in a few words."""
    lines = {
        "ready": f"ready (pid {runner.get('pid')}): flow commands run in it, with Prefect "
        "already imported (GRISTMILL_WARM=0 turns it off)",
        "stale": f"stale (pid {runner.get('pid')}): gristmill changed since it started; "
        "`gristmill server start` restarts it",
        "starting": f"starting (pid {runner.get('pid')})",
        "absent": f"not running: commands run in their own process (log: {runner.get('log')})",
        "off": "off (GRISTMILL_WARM=0): commands run in their own process",
    }
    return lines[runner["state"]]


@server_app.command("start")
@handle_errors
def server_start(
    port: Annotated[
        int | None, typer.Option(help="port on 127.0.0.1 [default: a free one]")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Start the local server in the background (its database keeps every run)."""
    _print_state(_server().start(port), json_output, "start")


@server_app.command("stop")
@handle_errors
def server_stop(json_output: JsonOption = False) -> None:
    """Stop the local server."""
    _print_state(_server().stop(), json_output, "stop")


@server_app.command("status")
@handle_errors
def server_status(json_output: JsonOption = False) -> None:
    """Whether the local server runs, and where."""
    _print_state(_server().status(), json_output, "status")


@app.command()
@handle_errors
def ui(
    open_browser: Annotated[bool, typer.Option("--open", help="open it in a web browser")] = False,
) -> None:
    """Print the URL of the Prefect UI of the local server (runs, artifacts, deployments)."""
    url = _server().ui_url()
    if url is None:
        raise GristmillError("no gristmill server running: gristmill server start starts one")
    out.print(url, highlight=False)
    if open_browser:
        import webbrowser

        webbrowser.open(url)


def main(hand_over: bool = True) -> None:
    """Console-script entry point (`hand_over`: a flow command may go to the warm runner once
    its checks pass; `gristmill.warm.main` offered it before importing this module)."""
    global _entry_argv
    _entry_argv = list(sys.argv) if hand_over else None
    app()
