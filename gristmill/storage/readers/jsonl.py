"""JSON Lines: blocks parsed by Arrow, line by line where Arrow would change a record."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json

from gristmill.storage.readers.extract import Extractor, _has_timestamp
from gristmill.storage.readers.inputs import plan_file
from gristmill.storage.readers.jsontext import (
    _ARROW_MAX_DEPTH,
    _BadRecord,
    _inexact_numbers,
    _load_json_line,
    _nests_deeper,
    _repeats_keys,
    _written_keys,
)
from gristmill.storage.readers.options import EXTRACTED_SCHEMA, Chunk, IngestOptions, Parsed, Reject
from gristmill.storage.readers.stream import StreamState, _tail_reject, line_blocks


def _max_line(options: IngestOptions) -> int:
    # JSON escaping can double a text's size; past this a line is surely an oversize document.
    return max(4 * options.max_doc_bytes, 16 << 20)


def _truncation(extractor: Extractor, state: StreamState, line: int, raw: bytes) -> Parsed:
    reject = extractor.reject(line, "truncated", state.problem or "truncated", raw)
    return Parsed(pa.Table.from_pylist([], EXTRACTED_SCHEMA), [reject], records=1)


def read_jsonl(chunk: Chunk, options: IngestOptions, extractor: Extractor) -> Iterator[Parsed]:
    oversize: list[Reject] = []
    states: list[StreamState] = []

    def on_oversize(line: int, head: bytes) -> None:
        detail = f"line longer than {_max_line(options)} bytes (first 64 KiB kept)"
        oversize.append(extractor.reject(line, "oversize", detail, head))

    blocks = line_blocks(
        chunk.path, chunk.start, chunk.end, chunk.first_line, 16 << 20,
        _max_line(options), on_oversize, states,
    )  # fmt: skip
    next_line = chunk.first_line
    cut_record: bytes | None = None
    for block in blocks:
        data = block.data
        next_line = block.first_line + data.count(b"\n")
        # The stream's problem is known once it is exhausted, i.e. by the last block; a
        # truncated stream's last line (no newline) is the record that was cut off.
        if states[0].problem and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            data, cut_record = data[:cut], data[cut:]
        parsed = _parse_jsonl_block(data, block.first_line, extractor)
        parsed.rejects.extend(oversize)
        parsed.records += len(oversize)
        oversize.clear()
        yield parsed
    if oversize:
        yield Parsed(pa.Table.from_pylist([], EXTRACTED_SCHEMA), oversize, len(oversize))
    if states[0].problem:
        yield _truncation(extractor, states[0], next_line, cut_record or b"")
    if tail := _tail_reject(extractor, states[0], next_line):
        yield Parsed(pa.Table.from_pylist([], EXTRACTED_SCHEMA), tail, len(tail))


def _line_spans(data: bytes, first_line: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start, end and line number of every line in a block (end excludes the newline)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(arr == 10)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [len(data)]))
    if len(data) and data.endswith(b"\n"):
        starts, ends = starts[:-1], ends[:-1]
    numbers = first_line + np.arange(len(starts), dtype=np.int64)
    return starts, ends, numbers


def _parse_jsonl_block(data: bytes, first_line: int, extractor: Extractor) -> Parsed:
    """Parse a block with Arrow's JSON reader; fall back to line-by-line on any problem."""
    if not data:
        return Parsed(pa.Table.from_pylist([], EXTRACTED_SCHEMA))
    starts, ends, numbers = _line_spans(data, first_line)
    arr = np.frombuffer(data, dtype=np.uint8)
    lengths = ends - starts
    # Blank lines are not records; a line holding only "\r" is blank too.
    carriage = lengths == 1
    if carriage.any():
        carriage[carriage] = arr[starts[carriage]] == 13
    nonblank = (lengths > 0) & ~carriage
    # Lines of only whitespace are blank too (Arrow skips them); they are rare, so check in Python.
    for i in np.flatnonzero(nonblank & np.isin(arr[np.minimum(starts, len(arr) - 1)], (9, 13, 32))):
        if not data[starts[i] : ends[i]].strip():
            nonblank[i] = False
    if not nonblank.any():  # Arrow would give a table without columns
        return Parsed(pa.Table.from_pylist([], EXTRACTED_SCHEMA))
    faithful = False  # Arrow read every line: no key repeats, no number beyond a double
    try:
        if not data.isascii():
            data.decode("utf-8")  # Arrow would silently replace invalid UTF-8 with U+FFFD
        if _nests_deeper(data, arr, starts, ends, _ARROW_MAX_DEPTH):
            raise ValueError("nested too deep for Arrow")  # its reader recurses and can crash
        table = pa_json.read_json(
            io.BytesIO(data), read_options=pa_json.ReadOptions(block_size=4 << 20)
        )
        # Whitespace-only lines shift rows against lines; parsed dates would be re-formatted;
        # doubles lose integers beyond 64 bits and the text of 1e400.
        dated = any(_has_timestamp(f.type) for f in table.schema)
        faithful = not _inexact_numbers(table)
        if table.num_rows != int(nonblank.sum()) or dated or not faithful:
            raise ValueError("rows differ from lines, dates were parsed, or numbers changed")
    except (pa.ArrowInvalid, ValueError):  # UnicodeDecodeError is a ValueError
        return _parse_jsonl_lines(data, starts, ends, numbers, nonblank, extractor, faithful)
    return extractor.from_table(table, numbers[nonblank])


def _parse_jsonl_lines(
    data: bytes,
    starts: np.ndarray,
    ends: np.ndarray,
    numbers: np.ndarray,
    nonblank: np.ndarray,
    extractor: Extractor,
    faithful: bool = False,
) -> Parsed:
    """Parse a block line by line. `faithful`: Arrow read every line, so parsed values are
    the records as written (no key repeats, no number orjson would change)."""
    records: list[tuple[int, Any, bytes]] = []
    verbatim: set[int] = set()  # records whose meta is kept as written
    counted: list[int] = []  # the others, and the keys parsed in each
    key_counts: list[int] = []
    rejects: list[Reject] = []
    for start, end, number in zip(starts[nonblank], ends[nonblank], numbers[nonblank], strict=True):
        raw = data[start:end]
        if not raw.strip():
            continue
        line = int(number)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as error:
            rejects.append(extractor.reject(line, "invalid_utf8", str(error), raw))
            continue
        try:
            value, keys = _load_json_line(raw, faithful)
        except _BadRecord as bad:
            rejects.append(extractor.reject(line, bad.reason, bad.detail, raw))
            continue
        if keys is None:
            verbatim.add(len(records))
        else:
            counted.append(len(records))
            key_counts.append(keys)
        records.append((line, value, raw))
    # Parsers keep only the last value of a repeated key: those records keep their meta as
    # written. Count keys over the whole block first, which is exact and cheap when none repeats.
    if not faithful:
        written = _written_keys(data)
        if written is not None:
            uncounted = [records[i][2] for i in verbatim] + [r.raw or b"" for r in rejects]
            written -= sum(_written_keys(raw) or 0 for raw in uncounted)
        if written != sum(key_counts):
            verbatim.update(i for i in counted if _repeats_keys(records[i][2]))
    parsed = extractor.from_dicts(records, verbatim)
    parsed.rejects[:0] = rejects
    parsed.records += len(rejects)
    return parsed


def plan_jsonl(path: str, source: str, fmt: str, options: IngestOptions) -> list[Chunk]:
    """A JSONL file's chunks: byte ranges at line boundaries where it can be split."""
    return plan_file(path, source, fmt, options, splittable=True)
