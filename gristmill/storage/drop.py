"""Dropping a corpus or a selection: its catalog rows and its files, refused while others use it.

A corpus is used by its selections and its stored signals; a selection by the selections made
from its members (`--input`). Dropping with `cascade` removes those too. The catalog rows go
in one transaction first, then the files: a crash in between leaves only unreferenced files.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from gristmill.errors import InputError
from gristmill.storage import catalog
from gristmill.storage.workspace import Workspace, safe_name


@dataclass
class Dropped:
    """What a drop removed: the corpus (if one), selections, signal names and directories."""

    corpus: str | None = None
    selections: list[str] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)
    directories: list[str] = field(default_factory=list)


def _selections_from(con: duckdb.DuckDBPyConnection, names: list[str]) -> list[str]:
    """The selections made from `names` (through --input), and from those, in drop order."""
    found: list[str] = []
    frontier = list(names)
    while frontier:
        children = [
            r[0]
            for r in con.execute(
                "select name from selections where parent in (select unnest(?)) order by name",
                [frontier],
            ).fetchall()
        ]
        frontier = [c for c in children if c not in found and c not in names]
        found += frontier
    return found


def _corpus_dependents(con: duckdb.DuckDBPyConnection, corpus: str) -> tuple[list[str], list[str]]:
    """The selections of a corpus (and those made from them) and its signal names."""
    found = "select name from selections where corpus = ? order by name"
    own = [r[0] for r in con.execute(found, [corpus]).fetchall()]
    selections = own + [s for s in _selections_from(con, own) if s not in own]
    stored = "select distinct signal from signals where corpus = ? order by 1"
    signals = [r[0] for r in con.execute(stored, [corpus]).fetchall()]
    return selections, signals


def _refusal(what: str, selections: list[str], signals: list[str]) -> InputError:
    parts = []
    if selections:
        parts.append(f"selections {', '.join(selections)}")
    if signals:
        parts.append(f"stored signals {', '.join(signals)}")
    return InputError(f"{what} is used by {' and '.join(parts)}; pass --cascade to drop them too")


def _delete_selections(con: duckdb.DuckDBPyConnection, names: list[str]) -> None:
    if names:
        con.execute("delete from selections where name in (select unnest(?))", [names])


def _remove(directories: list[Path]) -> list[str]:
    removed = []
    for directory in directories:
        if directory.exists():
            shutil.rmtree(directory)
            removed.append(str(directory))
    return removed


def drop_selection(workspace: Workspace, name: str, cascade: bool = False) -> Dropped:
    """Remove a selection (and, with `cascade`, the selections made from it) with their files;
    InputError while other selections were made from it and `cascade` is False."""
    with workspace.write_lock(f"drop selection {name}"), workspace.catalog() as con:
        catalog.get_selection(con, name)
        children = _selections_from(con, [name])
        if children and not cascade:
            raise _refusal(f"selection {name!r}", children, [])
        names = [name, *children]
        con.execute("begin transaction")
        try:
            _delete_selections(con, names)
            con.execute("commit")
        except Exception:
            con.execute("rollback")
            raise
    directories = [workspace.root / "selections" / safe_name("selection", n) for n in names]
    return Dropped(selections=names, directories=_remove(directories))


def drop_corpus(workspace: Workspace, corpus: str, cascade: bool = False) -> Dropped:
    """Remove a corpus, its shards, rejects and records (and, with `cascade`, its selections and
    stored signals) with their files; InputError while they exist and `cascade` is False."""
    with workspace.write_lock(f"drop corpus {corpus}"), workspace.catalog() as con:
        catalog.require_corpus(con, corpus)
        selections, signals = _corpus_dependents(con, corpus)
        if (selections or signals) and not cascade:
            raise _refusal(f"corpus {corpus!r}", selections, signals)
        con.execute("begin transaction")
        try:
            _delete_selections(con, selections)
            for table in ("signals", "rejects", "shards", "chunks", "sources"):
                con.execute(f"delete from {table} where corpus = ?", [corpus])
            con.execute("delete from corpora where name = ?", [corpus])
            con.execute("commit")
        except Exception:
            con.execute("rollback")
            raise
    directories = [workspace.corpus_dir(corpus), workspace.rejects_dir(corpus),
                   workspace.stats_dir(corpus),
                   workspace.root / "signals" / safe_name("corpus", corpus)]  # fmt: skip
    directories += [workspace.root / "selections" / safe_name("selection", s) for s in selections]
    return Dropped(corpus, selections, signals, _remove(directories))
