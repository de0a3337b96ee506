"""Read-only questions about a workspace: corpora, stats, selections, samples and SQL."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from gristmill.errors import InputError
from gristmill.storage import catalog
from gristmill.storage.files import sql_files, write_json_atomic
from gristmill.storage.workspace import Workspace


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def list_corpora(workspace: Workspace) -> list[dict[str, Any]]:
    """One row per corpus: documents, text bytes, shards, rejects."""
    with workspace.catalog(read_only=True) as con:
        return catalog.rows(
            con,
            """
            select c.name as corpus,
                   coalesce(sum(k.documents), 0)::bigint as documents,
                   coalesce((select sum(text_bytes) from shards s where s.corpus = c.name),
                            0)::bigint as text_bytes,
                   (select count(*) from shards s where s.corpus = c.name)::bigint as shards,
                   coalesce(sum(k.rejected), 0)::bigint as rejected,
                   c.created_at
            from corpora c left join chunks k on k.corpus = c.name
            group by c.name, c.created_at order by c.name
            """,
        )


def corpus_stats(workspace: Workspace, corpus: str, top_domains: int = 20) -> dict[str, Any]:
    """Documents, bytes, domains, rejects and skips of a corpus; read = ingested + rejected +
    skipped."""
    with workspace.catalog(read_only=True) as con:
        catalog.require_corpus(con, corpus)
        totals = catalog.rows(
            con,
            "select coalesce(sum(records_read), 0)::bigint as records_read, "
            "coalesce(sum(documents), 0)::bigint as documents, "
            "coalesce(sum(rejected), 0)::bigint as rejected, "
            "coalesce(sum(skipped), 0)::bigint as skipped, count(*) as chunks, "
            "count(distinct source) as sources from chunks where corpus = ?",
            [corpus],
        )[0]
        rejects = catalog.rows(
            con,
            "select reason, sum(count)::bigint as count from rejects where corpus = ? "
            "group by reason order by count desc, reason",
            [corpus],
        )
        skips = catalog.rows(
            con,
            "select reason, sum(count)::bigint as count from skips where corpus = ? "
            "group by reason order by count desc, reason",
            [corpus],
        )
        shards = catalog.shards(con, corpus)
    totals["shards"] = len(shards)
    totals["text_bytes"] = sum(s["text_bytes"] for s in shards)
    totals["file_bytes"] = sum(s["file_bytes"] for s in shards)
    kept_or_not = totals["documents"] + totals["rejected"] + totals["skipped"]
    totals["reconciles"] = totals["records_read"] == kept_or_not
    totals["rejects_by_reason"] = {r["reason"]: r["count"] for r in rejects}
    totals["skipped_by_reason"] = {r["reason"]: r["count"] for r in skips}
    totals["domains"] = []
    if shards:
        version = catalog.shards_version(shards)
        totals.update(_domain_counts(workspace, corpus, shards, version, top_domains))
    return {"corpus": corpus, **totals}


def _domain_counts(
    workspace: Workspace, corpus: str, shards: list[dict], version: str, top: int
) -> dict[str, Any]:
    """The corpus's top domains and their number: a scan of every shard, kept beside them per
    corpus version (a re-run of an ingest that added nothing, or `stats` again, reads it)."""
    folder = workspace.stats_dir(corpus)
    kept = folder / f"domains-{version}-top{top}.json"
    if kept.exists():
        return json.loads(kept.read_text(encoding="utf-8"))
    files = [workspace.absolute(s["path"]) for s in shards]
    with duckdb.connect() as con:
        counts = {
            "domains": catalog.rows(
                con,
                f"select domain, count(*) as documents, sum(n_bytes)::bigint as text_bytes "
                f"from read_parquet({sql_files(files)}) group by domain "
                f"order by documents desc, domain limit ?",
                [top],
            ),
            "n_domains": con.sql(
                f"select count(distinct domain) from read_parquet({sql_files(files)})"
            ).fetchall()[0][0],
        }
    for stale in folder.glob("domains-*.json"):  # an earlier version's
        stale.unlink(missing_ok=True)
    write_json_atomic(kept, counts)
    return counts


def repeated_doc_ids(workspace: Workspace, corpus: str) -> int:
    """How many documents of a corpus repeat another's doc_id (0 for a sound corpus)."""
    with workspace.catalog(read_only=True) as con:
        files = workspace.shard_files(con, corpus)
    if not files:
        return 0
    with duckdb.connect() as con:
        query = f"select count(*) - count(distinct doc_id) from read_parquet({sql_files(files)})"
        return int(con.sql(query).fetchall()[0][0])


def list_selections(workspace: Workspace) -> list[dict[str, Any]]:
    """One row per selection, newest last."""
    with workspace.catalog(read_only=True) as con:
        found = catalog.rows(
            con,
            "select name, corpus, parent, selector, budget, mode, n_candidates, n_selected, "
            "bytes_selected, created_at, summary from selections order by created_at, name",
        )
    for row in found:
        summary = json.loads(row.pop("summary") or "{}")
        row["domains"] = len(summary.get("domains", []))
    return found


def selection_record(workspace: Workspace, name: str) -> dict[str, Any]:
    """A selection's full record with its summary decoded."""
    with workspace.catalog(read_only=True) as con:
        record = catalog.get_selection(con, name)
    record["summary"] = json.loads(record["summary"] or "{}")
    record["config"] = json.loads(record["config"] or "{}")
    return record


@dataclass
class SelectionView:
    """What a selector's `explain` may query about one of its selections, on an open connection.

    SQL fragments: `candidates` is a FROM item of the candidate documents (alias `d`), `signal`
    one of the selection's signal (alias `s`, joined `using (doc_id)`), and `kept` a condition
    that holds when `d.doc_id` was kept. `columns` names the signal's columns.
    """

    record: dict[str, Any]
    con: duckdb.DuckDBPyConnection
    candidates: str
    signal: str
    kept: str
    columns: frozenset[str]
    sample: int
    seed: int
    max_chars: int

    @property
    def report(self) -> Any:
        """The scoring report the selector stored with its signal, if any."""
        return self.record["summary"].get("scoring")

    def rows(self, query: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Run a query (values as parameters) and return its rows as dicts."""
        return catalog.rows(self.con, query, params)


@contextmanager
def selection_view(
    workspace: Workspace, name: str, sample: int = 5, seed: int = 0, max_chars: int = 300
) -> Iterator[SelectionView]:
    """A view of the selection's candidates, signal and members, on a connection open for the
    duration of the `with` block."""
    record = selection_record(workspace, name)
    with workspace.catalog(read_only=True) as con:
        shards = workspace.shard_files(con, record["corpus"])
        signals = catalog.signal_files(
            con, record["corpus"], record["signal"], record["config_hash"]
        )
    members = workspace.members_path(name)
    parent = workspace.members_path(record["parent"]) if record["parent"] else None
    signal_paths = [workspace.absolute(p) for p in signals.values()]
    with duckdb.connect() as con:
        names = con.sql(f"select * from read_parquet({sql_files(signal_paths)}) limit 0").columns
        candidates = f"read_parquet({sql_files(shards)}) d"
        if parent is not None:
            candidates += f" semi join read_parquet({sql_files([parent])}) p using (doc_id)"
        signal = f"read_parquet({sql_files(signal_paths)}) s"
        kept = f"d.doc_id in (select doc_id from read_parquet({sql_files([members])}))"
        yield SelectionView(
            record, con, candidates, signal, kept, frozenset(names), sample, seed, max_chars
        )  # fmt: skip


def _documents(
    view: SelectionView, where: str, order: str, params: list[Any], limit: int
) -> list[dict[str, Any]]:
    """The first `limit` candidates by `order` among those `where` holds for, with domain,
    text (cut at max_chars), score and reasons. Their doc_ids are picked first, from the id
    and score columns alone; only those few documents' texts are then read."""
    picked = view.rows(
        f"select d.doc_id from {view.candidates} join {view.signal} using (doc_id) "
        f"where {where} {order} limit ?",
        [*params, limit],
    )
    if not picked:
        return []
    ids = [row["doc_id"] for row in picked]
    reasons = "s.reasons" if "reasons" in view.columns else "null"
    found = view.rows(
        f"select d.doc_id, d.domain, left(d.text, ?) as text, s.score, {reasons} as reasons "
        f"from {view.candidates} join {view.signal} using (doc_id) "
        f"where d.doc_id in ({', '.join('?' * len(ids))})",
        [view.max_chars, *ids],
    )
    by_id = {row["doc_id"]: row for row in found}
    return [by_id[doc_id] for doc_id in ids]


def sample_selection(view: SelectionView, ranked: int = 0) -> dict[str, Any]:
    """The selection's record, random kept and dropped documents, and the `ranked` highest and
    lowest scored candidates, each with its score and reasons."""
    order = "order by hash(d.doc_id, ?)"
    result = {
        "selection": view.record,
        "kept": _documents(view, view.kept, order, [view.seed], view.sample),
        "dropped": _documents(view, f"not {view.kept}", order, [view.seed], view.sample),
    }
    if ranked > 0:
        scored = "s.score is not null and not isnan(s.score)"
        for key, direction in (("highest", "desc"), ("lowest", "asc")):
            result[key] = _documents(
                view, scored, f"order by s.score {direction}, d.doc_id", [], ranked
            )
    return result


def _view_sources(con: duckdb.DuckDBPyConnection, workspace: Workspace) -> list[tuple[str, list]]:
    """(view name, files) of each corpus and its rejects (oldest corpus first), each signal
    (latest config) and each selection, read from the catalog itself."""
    sources: list[tuple[str, list]] = []
    for (corpus,) in con.execute("select name from corpora order by created_at, name").fetchall():
        shards = workspace.shard_files(con, corpus)
        sources.append((corpus, shards))
        recorded = con.execute(
            "select rejects_path from chunks where corpus = ? and rejects_path is not null "
            "order by rejects_path",
            [corpus],
        ).fetchall()
        sources.append((f"{corpus}__rejects", [workspace.absolute(r[0]) for r in recorded]))
    latest = catalog.rows(
        con,
        "select corpus, signal, arg_max(config_hash, created_at) as config_hash "
        "from signals group by corpus, signal order by corpus, signal",
    )
    for row in latest:
        files = catalog.signal_files(con, row["corpus"], row["signal"], row["config_hash"])
        paths = [workspace.absolute(p) for p in sorted(files.values())]
        sources.append((f"{row['corpus']}__{row['signal']}", paths))
    for (name,) in con.execute("select name from selections order by name").fetchall():
        path = workspace.members_path(name)
        sources.append((f"selection__{name}", [path] if path.exists() else []))
    return [(view, files) for view, files in sources if files]


def _create_views(
    con: duckdb.DuckDBPyConnection, sources: list[tuple[str, list]], taken: set[str]
) -> tuple[list[str], list[str]]:
    """Temporary views over the sources; a name already taken (DuckDB ignores case) is left
    out rather than shadowing a table or failing every query. Returns (created, left out)."""
    created, hidden = [], []
    taken = {name.lower() for name in taken}
    for view, files in sources:
        if view.lower() in taken:
            hidden.append(view)
            continue
        source = f"read_parquet({sql_files(files)})"
        con.execute(f"create temp view {_ident(view)} as select * from {source}")
        taken.add(view.lower())
        created.append(view)
    return created, hidden


def _lock_down(con: duckdb.DuckDBPyConnection, files: list[Path]) -> None:
    """From now on the connection reads only `files`: no other file or URL, no extension to
    install or load, no setting to change back."""
    con.execute("set allowed_paths = ?", [[str(f) for f in files]])
    for setting in (
        "enable_progress_bar = false",  # it would write to stdout, into --json output
        "autoinstall_known_extensions = false",
        "autoload_known_extensions = false",
        "enable_external_access = false",
        "lock_configuration = true",
    ):
        con.execute(f"set {setting}")


_EXPLAIN = re.compile(r"explain(\s+analyze)?\s+", re.IGNORECASE)
READ_ONLY_HELP = (
    "it takes one query: select, with, from, values, describe, summarize, show or explain select"
)


def _read_only_statement(con: duckdb.DuckDBPyConnection, query: str) -> Any:
    """The query's one statement if it only reads (a SELECT, or EXPLAIN of one); else InputError."""
    statements = con.extract_statements(query)
    if not statements:
        raise InputError(f"no statement to run: `gristmill sql` is read-only; {READ_ONLY_HELP}")
    if len(statements) > 1:
        raise InputError(
            f"`gristmill sql` is read-only and runs one statement, got {len(statements)}; "
            f"{READ_ONLY_HELP}"
        )
    statement = statements[0]
    kind = statement.type
    if kind == duckdb.StatementType.EXPLAIN:
        # EXPLAIN ANALYZE runs its statement, so what it explains must be a SELECT too.
        prefix = _EXPLAIN.match(statement.query)
        explained = con.extract_statements(statement.query[prefix.end() :]) if prefix else []
        kind = explained[0].type if len(explained) == 1 else kind
    if kind != duckdb.StatementType.SELECT:
        raise InputError(
            f"`gristmill sql` is read-only: {kind.name.lower()} statements are refused; "
            f"{READ_ONLY_HELP}"
        )
    return statement


def run_sql(workspace: Workspace, query: str, limit: int | None = None) -> dict[str, Any]:
    """Run one read-only query over the catalog tables and a view of every corpus, signal,
    selection and rejects; at most `limit` rows (`truncated` says whether more existed)."""
    if limit is not None and limit < 0:
        raise InputError(f"--limit: {limit} is negative (0 shows every row)")
    with duckdb.connect() as con:
        # Copy the (small) catalog tables and close the file at once: a long query must never
        # hold the catalog while a flow wants to write it.
        with workspace.catalog(read_only=True) as source:
            tables = {table for (table,) in source.execute("show tables").fetchall()}
            for table in tables:
                snapshot = source.sql(f"select * from {_ident(table)}").to_arrow_table()
                con.register(f"snapshot_{table}", snapshot)
                con.execute(f"create table {_ident(table)} as select * from snapshot_{table}")
                con.unregister(f"snapshot_{table}")
            sources = _view_sources(source, workspace)
        views, hidden = _create_views(con, sources, tables)
        # Only now: the views read their files while queried, so those stay readable.
        _lock_down(con, [file for _, files in sources for file in files])
        try:
            statement = _read_only_statement(con, query)
            cursor = con.execute(statement)
            columns = [d[0] for d in cursor.description]
            # One row past the limit says whether there were more; the rest is never read
            # (closing the connection drops the streaming result).
            data = cursor.fetchmany(limit + 1) if limit else cursor.fetchall()
        except duckdb.Error as error:
            raise InputError(f"SQL error: {error}\n(views: {', '.join(views) or 'none'})") from None
    truncated = bool(limit) and len(data) > limit
    rows = [list(r) for r in (data[:limit] if limit else data)]
    return {"columns": columns, "rows": rows, "truncated": truncated, "hidden": hidden}
