"""CSV and TSV: rows read with the csv module, each reject keeping its row as written."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Iterator
from typing import Any

from gristmill.storage.readers.extract import Extractor, _has_surrogates
from gristmill.storage.readers.inputs import plan_file
from gristmill.storage.readers.options import RAW_CAP, Chunk, IngestOptions, Parsed, Reject
from gristmill.storage.readers.stream import _tail_reject, raw_chunks


class _IterStream(io.RawIOBase):
    """A readable file object over an iterator of byte pieces."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            try:
                self._rest = next(self._pieces)
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


class _RowLines:
    """The physical lines csv.reader reads, held (up to RAW_CAP) until their row is taken."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self._held: list[str] = []
        self._held_size = 0
        self.count = 0  # physical lines read so far
        self.quotes = 0  # quote characters in the held row so far

    def __iter__(self) -> _RowLines:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.count += 1
        self.quotes += line.count('"')
        if self._held_size < RAW_CAP:
            self._held.append(line)
            self._held_size += len(line)
        return line

    def take(self) -> bytes:
        """The held row as it was written (without its line break, at most RAW_CAP bytes)."""
        raw = "".join(self._held).encode("utf-8", "surrogateescape")
        self._held.clear()
        self._held_size = self.quotes = 0
        return raw.removesuffix(b"\n").removesuffix(b"\r")[:RAW_CAP]


def read_csv(chunk: Chunk, options: IngestOptions, extractor: Extractor) -> Iterator[Parsed]:
    pieces, state = raw_chunks(chunk.path)
    text = io.TextIOWrapper(
        io.BufferedReader(_IterStream(pieces)), encoding="utf-8-sig", errors="surrogateescape",
        newline="",
    )  # fmt: skip
    delimiter = "\t" if chunk.format == "tsv" else ","
    quoting = options.csv_quoting
    if quoting == "auto":
        quoting = "none" if chunk.format == "tsv" else "minimal"
    field_limit = max(options.max_doc_bytes * 2, 1 << 20)
    csv.field_size_limit(field_limit)
    lines = _RowLines(text)
    reader = csv.reader(
        lines,
        delimiter=delimiter,
        quoting=csv.QUOTE_NONE if quoting == "none" else csv.QUOTE_MINIMAL,
    )
    header: list[str] | None = None
    batch: list[tuple[int, Any, bytes]] = []
    rejects: list[Reject] = []
    pending: tuple[int, list[str], bytes] | None = None  # held back: the last row may be cut

    def flush() -> Parsed:
        parsed = extractor.from_dicts(batch)
        parsed.rejects[:0] = rejects
        parsed.records += len(rejects)
        batch.clear()
        rejects.clear()
        return parsed

    def handle(line: int, row: list[str], raw: bytes) -> None:
        nonlocal header
        if not raw.strip():
            return  # a blank line is not a record, nor a header
        if _has_surrogates(row):
            rejects.append(extractor.reject(line, "invalid_utf8", "bytes are not UTF-8", raw))
            return
        if header is None and options.csv_header:
            header = row
            return
        names = header or [str(i) for i in range(len(row))]
        if header is not None and len(row) != len(header):
            detail = f"{len(row)} fields, the header has {len(header)}"
            rejects.append(extractor.reject(line, "bad_row", detail, raw))
            return
        batch.append((line, dict(zip(names, row, strict=True)), raw))

    while True:
        first = lines.count + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            if "field limit" not in str(error):
                rejects.append(extractor.reject(first, "bad_row", str(error), lines.take()))
                continue
            # Skip to the end of the quoted field (the row ends where a parser without a
            # limit would end it), so that its lines are not read as rows of their own.
            inside_quotes = quoting != "none" and lines.quotes % 2 == 1
            with contextlib.suppress(StopIteration):
                while inside_quotes:
                    next(lines)
                    inside_quotes = lines.quotes % 2 == 1
            detail = (
                f"a field over the {field_limit}-character limit, lines {first}-{lines.count} "
                f"(first {RAW_CAP} bytes kept)"
            )
            rejects.append(extractor.reject(first, "oversize", detail, lines.take()))
            continue
        if pending is not None:
            handle(*pending)
        pending = (first, row, lines.take())
        if len(batch) >= 10_000:
            yield flush()
    if pending is not None:
        if state.problem:
            rejects.append(extractor.reject(pending[0], "truncated", state.problem, pending[2]))
        else:
            handle(*pending)
    elif state.problem:
        rejects.append(extractor.reject(lines.count + 1, "truncated", state.problem, b""))
    rejects.extend(_tail_reject(extractor, state, lines.count + 1))
    yield flush()


def plan_csv(path: str, source: str, fmt: str, options: IngestOptions) -> list[Chunk]:
    """A CSV or TSV file is one chunk (a quoted field may span lines)."""
    return plan_file(path, source, fmt, options, splittable=False)
