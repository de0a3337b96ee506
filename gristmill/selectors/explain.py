"""Helpers for selectors' `explain`: ranked regions of a signal and tables of example clusters."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gristmill.selectors.base import Section, Table

if TYPE_CHECKING:
    from gristmill.storage.queries import SelectionView


def ranked_regions(
    view: SelectionView, columns: tuple[str, ...], orders: dict[str, str]
) -> list[Section]:
    """The `sample` scored candidates at the top of each region's order (region -> SQL order by,
    over the signal `s`), with the named statistics; none when the signal lacks a column."""
    if not set(columns) <= view.columns:
        return []
    stats = ", ".join(f"s.{c}" for c in columns)
    query = (
        f"select d.doc_id, s.score, {stats}, left(d.text, ?) as text from {view.candidates} "
        f"join {view.signal} using (doc_id) "
        "where s.score is not null and not isnan(s.score) order by "
    )
    regions = {
        region: view.rows(f"{query}{order}, d.doc_id limit ?", [view.max_chars, view.sample])
        for region, order in orders.items()
    }
    return [Section("regions", regions, [Table(name, rows) for name, rows in regions.items()])]


def example_clusters(
    view: SelectionView, picked: list[dict[str, Any]], members_query: str
) -> list[dict[str, Any]]:
    """Each picked cluster ({cluster, size}) with its members, read by `members_query` (its
    parameters: the text length, then the cluster id)."""
    return [
        {"cluster": row["cluster"], "size": row["size"],
         "members": view.rows(members_query, [view.max_chars, row["cluster"]])}
        for row in picked
    ]  # fmt: skip


def cluster_tables(examples: list[dict[str, Any]]) -> list[Table]:
    """One table per example cluster ({cluster, size, members}): its members, the kept marked."""
    tables = []
    for example in examples:
        rows = [
            {"doc_id": m["doc_id"], "domain": m["domain"], "kept": "kept" if m["kept"] else "",
             "text": m["text"]}
            for m in example["members"]
        ]  # fmt: skip
        tables.append(Table(f"cluster {example['cluster']} ({example['size']} documents)", rows))
    return tables
