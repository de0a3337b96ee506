"""Extraction: parsed records (dicts or Arrow tables) to the extracted columns plus rejects."""

from __future__ import annotations

import atexit
import json
import threading
from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from gristmill.storage.readers.jsontext import _verbatim_meta
from gristmill.storage.readers.options import EXTRACTED_SCHEMA, IngestOptions, Parsed, Reject


def _get_path(record: dict, dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _column(table: pa.Table, dotted: str) -> pa.ChunkedArray | None:
    """A (possibly nested, dotted) field of a table, or None when absent."""
    head, *rest = dotted.split(".")
    if head not in table.column_names:
        return None
    column = table[head]
    for part in rest:
        if not pa.types.is_struct(column.type) or column.type.get_field_index(part) < 0:
            return None
        column = pc.struct_field(column, part)
    return column


def _url_host(url: Any) -> str | None:
    if not isinstance(url, str):
        return None
    try:
        return urlsplit(url.strip()).hostname
    except ValueError:
        return None


def _as_str(value: Any) -> str | None:
    """A field as text, the way Arrow casts it: 2.0 -> "2", objects and lists as JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, default=str, separators=(",", ":"))


def _text_column(column: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    """A column as strings: scalars cast by Arrow, nested values as compact JSON."""
    nested = pa.types.is_nested(column.type)
    return (
        pa.array([_as_str(v) for v in column.to_pylist()], pa.string())
        if nested
        else pc.cast(column, pa.string())
    )


def _has_timestamp(dtype: pa.DataType) -> bool:
    if pa.types.is_timestamp(dtype) or pa.types.is_date(dtype) or pa.types.is_time(dtype):
        return True
    if pa.types.is_struct(dtype):
        return any(_has_timestamp(dtype.field(i).type) for i in range(dtype.num_fields))
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return _has_timestamp(dtype.value_type)
    return False


def _has_surrogates(values: list[str]) -> bool:
    return any(any("\udc80" <= ch <= "\udcff" for ch in v) for v in values if not v.isascii())


_meta_db: duckdb.DuckDBPyConnection | None = None
_meta_db_guard = threading.Lock()


def _meta_database() -> duckdb.DuckDBPyConnection:
    """One in-memory DuckDB per process for JSON encoding; threads each take a cursor."""
    global _meta_db
    with _meta_db_guard:
        if _meta_db is None:
            _meta_db = duckdb.connect(config={"threads": 1})
            atexit.register(_drop_meta_database)
        return _meta_db


def _drop_meta_database() -> None:
    """Close and release it before interpreter teardown (else DuckDB reports leaked objects)."""
    global _meta_db
    with _meta_db_guard:
        if _meta_db is not None:
            _meta_db.close()
            _meta_db = None


def _meta_json(table: pa.Table, exclude: str) -> pa.Array:
    """JSON object of every column except `exclude`, one string per row."""
    keep = [name for name in table.column_names if name != exclude]
    if not keep:
        return pa.array(["{}"] * table.num_rows, pa.string())
    quoted = ", ".join('"' + name.replace('"', '""') + '"' for name in keep)
    with _meta_database().cursor() as con:  # a cursor is cheap; a new database is not
        con.register("rest", table.select(keep))
        query = f"select to_json(t)::varchar as meta from (select {quoted} from rest) t"
        meta = con.sql(query).to_arrow_table()["meta"].combine_chunks()
        con.unregister("rest")
    # Arrow fills a key that only other records have with null; drop top-level nulls (the
    # line-by-line path does too) so a record's meta never depends on its neighbours.
    nulls = np.zeros(table.num_rows, bool)
    for name in keep:
        if table[name].null_count:
            nulls |= np.asarray(pc.is_null(table[name]))
    if not nulls.any():
        return meta
    values = meta.to_pylist()
    for row in np.flatnonzero(nulls):  # as written: DuckDB writes NaN and Infinity as such
        values[row] = _verbatim_meta(values[row].encode("utf-8"), None)
    return pa.array(values, pa.string())


class Extractor:
    """Turns parsed records (dicts or Arrow tables) into the extracted columns plus rejects."""

    def __init__(self, options: IngestOptions, source: str) -> None:
        self.options = options
        self.source = source

    def reject(self, line: int, reason: str, detail: str, raw: bytes | None) -> Reject:
        """A reject of this source."""
        return Reject(self.source, line, reason, detail, raw)

    def from_dicts(
        self, records: list[tuple[int, Any, bytes]], verbatim: Collection[int] = ()
    ) -> Parsed:
        """Extract from (line, parsed value, raw bytes) triples; `verbatim`: the positions of
        JSON records whose meta is taken from their raw bytes (re-encoding would change it)."""
        o = self.options
        lines, texts, ids, domains, metas, rejects = [], [], [], [], [], []
        text_key = o.text_field if "." not in o.text_field else None  # left out of meta
        for position, (line, record, raw) in enumerate(records):
            if not isinstance(record, dict):
                kind = type(record).__name__
                rejects.append(self.reject(line, "not_an_object", f"record is a JSON {kind}", raw))
                continue
            text = _get_path(record, o.text_field)
            if text is None:
                detail = f"no {o.text_field!r} field (or it is null)"
                rejects.append(self.reject(line, "missing_text", detail, raw))
                continue
            if not isinstance(text, str):
                detail = f"{o.text_field!r} is of type {type(text).__name__}, not a string"
                rejects.append(self.reject(line, "non_string_text", detail, raw))
                continue
            lines.append(line)
            texts.append(text)
            ids.append(_as_str(_get_path(record, o.id_field)) if o.id_field else None)
            if o.url_field:
                domains.append(_url_host(_get_path(record, o.url_field)))
            elif o.domain_field:
                domains.append(_as_str(_get_path(record, o.domain_field)))
            else:
                domains.append(None)
            if position in verbatim:
                metas.append(_verbatim_meta(raw, text_key))
                continue
            rest = {k: v for k, v in record.items() if v is not None and k != text_key}
            try:
                metas.append(orjson.dumps(rest, default=str).decode() if rest else "{}")
            except orjson.JSONEncodeError:  # nested deeper than orjson writes
                metas.append(
                    _verbatim_meta(raw, text_key)
                    if raw.lstrip().startswith(b"{")
                    else json.dumps(rest, default=str, ensure_ascii=False)
                )
        table = pa.table([lines, texts, ids, domains, metas], schema=EXTRACTED_SCHEMA)
        return Parsed(table, rejects, records=len(records))

    def from_table(self, table: pa.Table, lines: np.ndarray) -> Parsed:
        """Extract from an Arrow table whose row i came from line (or row) lines[i]."""
        o = self.options
        n = table.num_rows
        text = _column(table, o.text_field)
        is_string = text is not None and (
            pa.types.is_string(text.type) or pa.types.is_large_string(text.type)
        )
        present = np.zeros(n, bool) if text is None else np.asarray(pc.is_valid(text))
        keep = present if is_string else np.zeros(n, bool)
        rejects: list[Reject] = []
        if not keep.all():
            bad = np.flatnonzero(~keep)
            for index, row in zip(bad, table.take(pa.array(bad)).to_pylist(), strict=True):
                if present[index]:
                    reason = "non_string_text"
                    detail = f"{o.text_field!r} is {text.type}, not a string"
                else:
                    reason, detail = "missing_text", f"no {o.text_field!r} field (or it is null)"
                raw = orjson.dumps(row, default=str)
                rejects.append(self.reject(int(lines[index]), reason, detail, raw))
            table, lines = table.filter(pa.array(keep)), lines[keep]
            text = _column(table, o.text_field) if is_string else pa.chunked_array([], pa.string())
        text = pc.cast(text, pa.string())
        ids = _column(table, o.id_field) if o.id_field else None
        ids = _text_column(ids) if ids is not None else pa.nulls(table.num_rows, pa.string())
        if o.url_field:
            urls = _column(table, o.url_field)
            hosts = [_url_host(u) for u in urls.to_pylist()] if urls is not None else None
            domain = pa.array(hosts or [None] * table.num_rows, pa.string())
        elif o.domain_field and _column(table, o.domain_field) is not None:
            domain = _text_column(_column(table, o.domain_field))
        else:
            domain = pa.nulls(table.num_rows, pa.string())
        exclude = o.text_field if "." not in o.text_field else ""
        meta = _meta_json(table, exclude)
        out = pa.table(
            [pa.array(lines, pa.int64()), text, ids, domain, meta], schema=EXTRACTED_SCHEMA
        )
        return Parsed(out, rejects, records=n)
