"""Plain text: one document per file, per line, per paragraph or per separator."""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from gristmill.storage.readers.extract import Extractor, _has_surrogates
from gristmill.storage.readers.inputs import input_size, open_input, plan_file
from gristmill.storage.readers.options import (
    _COMPRESSED,
    EXTRACTED_SCHEMA,
    RAW_CAP,
    Chunk,
    IngestOptions,
    Parsed,
    Reject,
)
from gristmill.storage.readers.stream import _tail_reject, raw_chunks


def read_txt(chunk: Chunk, options: IngestOptions, extractor: Extractor) -> Iterator[Parsed]:
    if options.txt_unit == "file" and options.separator is None:
        yield _read_txt_file(chunk, options, extractor)
        return
    by_line = options.separator is None and options.txt_unit == "line"
    separator = options.separator or ("\n" if by_line else "\n\n")
    keep_tail = len(separator) - 1  # a separator may straddle two reads
    limit = options.max_doc_bytes
    plain = Extractor(options.model_copy(update={"text_field": "text"}), chunk.source)
    docs: list[tuple[int, Any, bytes]] = []
    keys: list[str] = []
    rejects: list[Reject] = []
    ordinal = 0  # several documents can share a line, so segments are keyed by position

    def emit(line: int, segment: str) -> None:
        nonlocal ordinal
        ordinal += 1
        if by_line:
            text = segment.removesuffix("\r")
        else:
            lead = len(segment) - len(segment.lstrip("\r\n"))
            line += segment.count("\n", 0, lead)
            text = segment.strip("\r\n")
        if not text.strip():
            return  # a blank segment is not a record
        if _has_surrogates([text]):
            raw = text.encode("utf-8", "surrogateescape")
            rejects.append(extractor.reject(line, "invalid_utf8", "bytes are not UTF-8", raw))
        else:
            docs.append((line, {"text": text}, b""))
            keys.append(str(ordinal))

    def take() -> Parsed:
        out = plain.from_dicts(docs)
        if not by_line:
            out.table = out.table.set_column(2, "id", pa.array(keys, pa.string()))
        out.rejects[:0] = rejects
        out.records += len(rejects)
        docs.clear(), keys.clear(), rejects.clear()
        return out

    pieces, state = raw_chunks(chunk.path, chunk.start, chunk.end)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
    buffer, line, skipping = "", chunk.first_line, False
    for number, piece in enumerate(pieces):
        buffer += decoder.decode(piece)
        if number == 0 and chunk.start == 0:
            buffer = buffer.removeprefix("\ufeff")
        while (cut := buffer.find(separator)) >= 0:
            segment, buffer = buffer[:cut], buffer[cut + len(separator) :]
            if skipping:
                skipping = False  # the oversize record ends here
            else:
                emit(line, segment)
            line += segment.count("\n") + separator.count("\n")
        if not skipping and len(buffer) > limit:  # more characters than bytes allowed
            detail = f"document longer than {limit} bytes (first 64 KiB kept)"
            raw = buffer[:RAW_CAP].encode("utf-8", "surrogateescape")[:RAW_CAP]
            lead = len(buffer) - len(buffer.lstrip("\r\n")) if not by_line else 0
            rejects.append(extractor.reject(line + buffer.count("\n", 0, lead), "oversize",
                                            detail, raw))  # fmt: skip
            skipping = True
        if skipping and len(buffer) > keep_tail:
            dropped = buffer[: len(buffer) - keep_tail]
            line += dropped.count("\n")
            buffer = buffer[len(dropped) :]
        if len(docs) >= 10_000:
            yield take()
    buffer += decoder.decode(b"", final=True)
    if state.problem:
        raw = buffer.encode("utf-8", "surrogateescape")
        rejects.append(extractor.reject(line, "truncated", state.problem, raw))
    elif not skipping and buffer.strip():
        emit(line, buffer.removesuffix("\n") if by_line else buffer)
    rejects.extend(_tail_reject(extractor, state, line + buffer.count("\n")))
    yield take()


def _read_txt_file(chunk: Chunk, options: IngestOptions, extractor: Extractor) -> Parsed:
    limit = options.max_doc_bytes
    size = input_size(chunk.path)
    empty = pa.Table.from_pylist([], EXTRACTED_SCHEMA)
    compressed = Path(chunk.path).suffix.lower() in _COMPRESSED
    kept = f"(the file itself is kept; first {RAW_CAP} bytes here)"
    if not compressed and size > limit:
        detail = f"file is {size} bytes, over the {limit}-byte limit {kept}"
        with open_input(chunk.path) as handle:
            head = handle.read(RAW_CAP)
        return Parsed(empty, [extractor.reject(1, "oversize", detail, head)], records=1)
    pieces, state = raw_chunks(chunk.path)
    data = bytearray()
    for piece in pieces:
        data += piece
        if len(data) > limit:
            detail = f"document over the {limit}-byte limit {kept}"
            reject = extractor.reject(1, "oversize", detail, bytes(data[:RAW_CAP]))
            return Parsed(empty, [reject], records=1)
    tail = _tail_reject(extractor, state, 1 + data.count(b"\n"))
    if state.problem:
        return Parsed(empty, [extractor.reject(1, "truncated", state.problem, bytes(data))], 1)
    if tail and not data:
        return Parsed(empty, tail, records=1)
    try:
        text = bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        reject = extractor.reject(1, "invalid_utf8", str(error), bytes(data))
        return Parsed(empty, [reject, *tail], records=1 + len(tail))
    plain = Extractor(options.model_copy(update={"text_field": "text"}), chunk.source)
    parsed = plain.from_dicts([(1, {"text": text}, b"")])
    parsed.rejects.extend(tail)
    parsed.records += len(tail)
    return parsed


def plan_txt(path: str, source: str, fmt: str, options: IngestOptions) -> list[Chunk]:
    """A text file's chunks: byte ranges only for one document per line."""
    by_line = options.txt_unit == "line" and options.separator is None
    return plan_file(path, source, fmt, options, splittable=by_line)
