"""The DuckDB catalog: schema and the few statements that read and write it.

Only the flow process calls the writing functions; workers write Parquet files and return
metadata. Values always go in as parameters, never formatted into SQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import duckdb

from gristmill.errors import InputError, NotFoundError

# Version 2 added `transforms` (which transforms made a derived corpus from which parent).
SCHEMA_VERSION = "2"

_SCHEMA = """
create table if not exists meta (key varchar primary key, value varchar);
create table if not exists corpora (
    name varchar primary key, created_at timestamp default current_timestamp);
create table if not exists sources (
    corpus varchar, source varchar, fingerprint varchar, options_hash varchar,
    primary key (corpus, source));
create table if not exists chunks (
    corpus varchar, chunk_key varchar, source varchar, records_read bigint, documents bigint,
    rejected bigint, rejects_path varchar, done_at timestamp default current_timestamp,
    primary key (corpus, chunk_key));
create table if not exists shards (
    corpus varchar, path varchar, chunk_key varchar, rows bigint, text_bytes bigint,
    file_bytes bigint, content_hash varchar, primary key (corpus, path));
create table if not exists rejects (
    corpus varchar, chunk_key varchar, source varchar, reason varchar, count bigint);
alter table chunks add column if not exists skipped bigint default 0;
create table if not exists skips (
    corpus varchar, chunk_key varchar, source varchar, reason varchar, count bigint);
create table if not exists signals (
    corpus varchar, signal varchar, config_hash varchar, shard_hash varchar, path varchar,
    rows bigint, config varchar, created_at timestamp default current_timestamp,
    primary key (corpus, signal, config_hash, shard_hash));
create table if not exists selections (
    name varchar primary key, corpus varchar, parent varchar, selector varchar, signal varchar,
    config_hash varchar, config varchar, budget varchar, mode varchar, seed bigint,
    n_candidates bigint, n_selected bigint, bytes_selected bigint, corpus_version varchar,
    code_version varchar, recipe varchar, summary varchar,
    created_at timestamp default current_timestamp);
create table if not exists transforms (
    corpus varchar primary key, parent varchar, parent_version varchar, transforms varchar,
    config_hash varchar, code_version varchar, recipe varchar, status varchar,
    summary varchar, created_at timestamp default current_timestamp, finished_at timestamp);
create table if not exists runs (
    run_id varchar primary key, kind varchar, params varchar, status varchar, metrics varchar,
    created_at timestamp default current_timestamp, finished_at timestamp);
"""


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the catalog tables if they are missing, and note the schema version.

    Every change so far only added tables, which `create table if not exists` gives an older
    catalog too; the version is raised to say so (a later change that alters a table migrates
    here, keyed by the version found).
    """
    con.execute(_SCHEMA)
    con.execute(
        "insert into meta values ('schema_version', ?) on conflict do update set "
        "value = excluded.value where try_cast(meta.value as integer) < ?",
        [SCHEMA_VERSION, int(SCHEMA_VERSION)],
    )


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version the catalog was last written with."""
    found = con.execute("select value from meta where key = 'schema_version'").fetchall()
    return int(found[0][0]) if found else 0


def has_table(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """True when the catalog has `table` (a read-only catalog older than it may not)."""
    found = con.execute(
        "select 1 from duckdb_tables() where table_name = ? and database_name = current_database()",
        [table],
    ).fetchall()
    return bool(found)


def rows(con: duckdb.DuckDBPyConnection, query: str, params: list[Any] | None = None) -> list[dict]:
    """Run a query and return its rows as dicts (read to the end, so the connection is free)."""
    cursor = con.execute(query, params or [])
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


# -- corpora and ingest ------------------------------------------------------------------------
@dataclass
class ShardInfo:
    """A document shard written by a worker."""

    path: str
    rows: int
    text_bytes: int
    file_bytes: int
    content_hash: str


@dataclass
class ChunkResult:
    """What an ingest worker returns for one chunk of one input."""

    chunk_key: str
    source: str
    records_read: int = 0
    documents: int = 0
    rejected: int = 0
    skipped: int = 0  # records that are not documents by design (a WARC's requests, images...)
    reject_counts: dict[str, int] = field(default_factory=dict)
    skip_counts: dict[str, int] = field(default_factory=dict)
    shards: list[ShardInfo] = field(default_factory=list)
    rejects_path: str | None = None


def corpus_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Names of all corpora, sorted."""
    return [r[0] for r in con.execute("select name from corpora order by name").fetchall()]


def require_corpus(con: duckdb.DuckDBPyConnection, corpus: str) -> None:
    """Raise NotFoundError unless the corpus exists."""
    if not con.execute("select 1 from corpora where name = ?", [corpus]).fetchall():
        known = ", ".join(corpus_names(con)) or "none yet"
        raise NotFoundError(f"no corpus named {corpus!r} in this workspace (corpora: {known})")


def check_corpus_name(con: duckdb.DuckDBPyConnection, corpus: str) -> None:
    """Refuse a new corpus whose name differs only in case from an existing one: SQL names
    are case-insensitive, so `gristmill sql` could show only one of the two."""
    found = con.execute(
        "select name from corpora where lower(name) = lower(?) and name <> ?", [corpus, corpus]
    ).fetchone()
    if found:
        raise InputError(
            f"corpus name {corpus!r} differs only in case from the existing corpus {found[0]!r}; "
            "use that name or another"
        )


def check_sources(
    con: duckdb.DuckDBPyConnection, corpus: str, sources: dict[str, tuple[str, str]]
) -> None:
    """Record each source's fingerprint and options; refuse a source that changed since."""
    con.execute("insert into corpora (name) values (?) on conflict do nothing", [corpus])
    recorded = {
        source: (fingerprint, options_hash)
        for source, fingerprint, options_hash in con.execute(
            "select source, fingerprint, options_hash from sources where corpus = ?", [corpus]
        ).fetchall()
    }  # one query, not one per source: a re-run of 100 files is a planning step, not 100
    new = []
    for source, (fingerprint, options_hash) in sources.items():
        known = recorded.get(source)
        if known is None:
            new.append([corpus, source, fingerprint, options_hash])
        elif known[0] != fingerprint:
            raise InputError(
                f"{source}: the file changed since it was ingested into corpus {corpus!r}; "
                "ingest it into a new corpus (documents keep stable ids per corpus)"
            )
        elif known[1] != options_hash:
            raise InputError(
                f"{source}: already ingested into corpus {corpus!r} with different options "
                "(fields, format, limits or chunk size); use the same options or a new corpus"
            )
    if new:
        con.executemany("insert into sources values (?, ?, ?, ?)", new)


def done_chunks(con: duckdb.DuckDBPyConnection, corpus: str) -> set[str]:
    """Keys of the chunks already ingested into a corpus."""
    found = con.execute("select chunk_key from chunks where corpus = ?", [corpus]).fetchall()
    return {r[0] for r in found}


def record_chunk(con: duckdb.DuckDBPyConnection, corpus: str, result: ChunkResult) -> None:
    """Record a finished chunk, its shards and its reject counts in one transaction."""
    con.execute("begin transaction")
    try:
        con.execute(
            "insert into chunks (corpus, chunk_key, source, records_read, documents, rejected, "
            "rejects_path, skipped) values (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                corpus,
                result.chunk_key,
                result.source,
                result.records_read,
                result.documents,
                result.rejected,
                result.rejects_path,
                result.skipped,
            ],
        )
        for shard in result.shards:
            con.execute(
                "insert into shards values (?, ?, ?, ?, ?, ?, ?)",
                [
                    corpus,
                    shard.path,
                    result.chunk_key,
                    shard.rows,
                    shard.text_bytes,
                    shard.file_bytes,
                    shard.content_hash,
                ],
            )
        for reason, count in sorted(result.reject_counts.items()):
            con.execute(
                "insert into rejects values (?, ?, ?, ?, ?)",
                [corpus, result.chunk_key, result.source, reason, count],
            )
        for reason, count in sorted(result.skip_counts.items()):
            con.execute(
                "insert into skips values (?, ?, ?, ?, ?)",
                [corpus, result.chunk_key, result.source, reason, count],
            )
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise


def shards(con: duckdb.DuckDBPyConnection, corpus: str) -> list[dict]:
    """The corpus's shards in a stable order."""
    return rows(con, "select * from shards where corpus = ? order by path", [corpus])


def corpus_version(con: duckdb.DuckDBPyConnection, corpus: str) -> str:
    """A hash naming the exact set of shards a corpus has now."""
    return shards_version(shards(con, corpus))


def shards_version(rows: list[dict]) -> str:
    """The corpus version of these shard rows (as `shards` returns them)."""
    import xxhash

    hashes = sorted(s["content_hash"] for s in rows)
    return xxhash.xxh3_64_hexdigest("\n".join(hashes).encode())


def drop_chunks(con: duckdb.DuckDBPyConnection, corpus: str, keys: set[str]) -> list[str]:
    """Forget chunks of a corpus with their shards and rejects, in one transaction; the paths
    of their files (for the caller to delete once the catalog no longer names them)."""
    paths: list[str] = []
    if not keys:
        return paths
    con.execute("begin transaction")
    try:
        for key in sorted(keys):
            found = con.execute(
                "select path from shards where corpus = ? and chunk_key = ? union all "
                "select rejects_path from chunks where corpus = ? and chunk_key = ? "
                "and rejects_path is not null",
                [corpus, key, corpus, key],
            ).fetchall()
            paths += [p for (p,) in found]
            for table in ("shards", "rejects", "chunks"):
                con.execute(
                    f"delete from {table} where corpus = ? and chunk_key = ?", [corpus, key]
                )
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise
    return paths


# -- transforms --------------------------------------------------------------------------------
def transform_record(con: duckdb.DuckDBPyConnection, corpus: str) -> dict[str, Any] | None:
    """How a derived corpus was made (parent, transforms, config hash), or None for a corpus
    that was ingested."""
    if not has_table(con, "transforms"):
        return None
    found = rows(con, "select * from transforms where corpus = ?", [corpus])
    return found[0] if found else None


def record_transform(con: duckdb.DuckDBPyConnection, record: dict[str, Any]) -> None:
    """Insert or replace a derived corpus's record (and its row in `corpora`)."""
    con.execute("insert into corpora (name) values (?) on conflict do nothing", [record["corpus"]])
    _insert_or_replace(con, "transforms", record)


def _insert_or_replace(con: duckdb.DuckDBPyConnection, table: str, record: dict[str, Any]) -> None:
    """Insert or replace one row of a catalog table (column names are the catalog's own)."""
    columns = list(record)
    placeholders = ", ".join("?" for _ in columns)
    con.execute(
        f"insert or replace into {table} ({', '.join(columns)}) values ({placeholders})",
        [record[c] for c in columns],
    )


# -- signals -----------------------------------------------------------------------------------
def signal_files(
    con: duckdb.DuckDBPyConnection, corpus: str, signal: str, config_hash: str
) -> dict[str, str]:
    """shard content hash -> signal file path, for the shards already scored with this config."""
    found = con.execute(
        "select shard_hash, path from signals where corpus = ? and signal = ? and config_hash = ?",
        [corpus, signal, config_hash],
    ).fetchall()
    return dict(found)


def record_signal(
    con: duckdb.DuckDBPyConnection,
    corpus: str,
    signal: str,
    config_hash: str,
    shard_hash: str,
    path: str,
    n_rows: int,
    config: dict[str, Any],
) -> None:
    """Record one shard's stored scores for a (signal, config hash)."""
    con.execute(
        "insert or replace into signals (corpus, signal, config_hash, shard_hash, path, rows, "
        "config) values (?, ?, ?, ?, ?, ?, ?)",
        [corpus, signal, config_hash, shard_hash, path, n_rows, json.dumps(config, default=str)],
    )


# -- selections --------------------------------------------------------------------------------
def record_selection(con: duckdb.DuckDBPyConnection, record: dict[str, Any]) -> None:
    """Insert or replace a selection's record."""
    _insert_or_replace(con, "selections", record)


def get_selection(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, Any]:
    """A selection's record; NotFoundError if there is none."""
    found = rows(con, "select * from selections where name = ?", [name])
    if not found:
        known = [r[0] for r in con.execute("select name from selections order by 1").fetchall()]
        raise NotFoundError(
            f"no selection named {name!r} in this workspace "
            f"(selections: {', '.join(known) or 'none yet'})"
        )
    return found[0]


# -- experiment runs ---------------------------------------------------------------------------
def record_run(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    kind: str,
    params: dict[str, Any],
    status: str,
    metrics: Any = None,
    finished: bool = False,
) -> None:
    """Insert or update a run's record (status running, done or failed; metrics as JSON)."""
    con.execute(
        "insert into runs (run_id, kind, params, status, metrics, finished_at) "
        "values (?, ?, ?, ?, ?, case when ? then current_timestamp end) "
        "on conflict (run_id) do update set kind = excluded.kind, params = excluded.params, "
        "status = excluded.status, metrics = excluded.metrics, finished_at = excluded.finished_at",
        [run_id, kind, json.dumps(params, default=str), status,
         None if metrics is None else json.dumps(metrics, default=str), finished],
    )  # fmt: skip
