"""WARC and ARC files (plain or gzip per record): successful HTML responses -> main text.

A record is located by its byte offset in the file (the start of its gzip member), which is
the document's `source_line` and the key of its doc_id. A `.warc.gz` is cut into chunks of
about `chunk_bytes` at member starts, found without decompressing the file (a gzip header
whose member decompresses to "WARC/"); a plain `.warc` or an ARC file is one chunk.

Responses that are not pages by design (requests, metadata, redirects, errors, images, pages
without main text) are skipped, counted by reason in `Parsed.skipped`; records that cannot
be used (cut off, undecodable, unparsable, oversize) are rejects at their offset.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pyarrow as pa

from gristmill.errors import InputError
from gristmill.storage.readers.extract import Extractor
from gristmill.storage.readers.html import Undecodable, decode_html, main_text
from gristmill.storage.readers.inputs import input_size, open_input, plan_file
from gristmill.storage.readers.options import (
    _READ_SIZE,
    EXTRACTED_SCHEMA,
    RAW_CAP,
    Chunk,
    IngestOptions,
    Parsed,
    Reject,
)

_GZIP_MAGIC = b"\x1f\x8b\x08"
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_BATCH = 256  # documents per Parsed batch: pages are large, so keep batches small


def _is_gzip(path: str) -> bool:
    return Path(path).suffix.lower() == ".gz"


def _is_arc(path: str) -> bool:
    suffixes = [s.lower() for s in Path(path).suffixes]
    return ".arc" in suffixes[-2:]


def _starts_record(handle: Any, offset: int) -> bool:
    """True if a gzip member starts at `offset` and decompresses to a WARC record header."""
    handle.seek(offset)
    head = handle.read(16 << 10)
    try:
        out = zlib.decompressobj(wbits=31).decompress(head, 16)
    except zlib.error:
        return False
    return out.startswith(b"WARC/")


def _next_member(handle: Any, offset: int, total: int) -> int | None:
    """The offset of the first record's gzip member at or after `offset`, if any."""
    while offset < total:
        handle.seek(offset)
        block = handle.read(_READ_SIZE + len(_GZIP_MAGIC) - 1)
        at = block.find(_GZIP_MAGIC)
        while at >= 0:
            if _starts_record(handle, offset + at):
                return offset + at
            at = block.find(_GZIP_MAGIC, at + 1)
        offset += _READ_SIZE
    return None


def plan_warc(path: str, source: str, fmt: str, options: IngestOptions) -> list[Chunk]:
    """A WARC's chunks: a .warc.gz cut at record members every `chunk_bytes`, else whole."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".gz", ".warc", ".arc"):
        raise InputError(
            f"{path}: a WARC or ARC file must be plain or gzip-compressed (got {suffix})"
        )
    if options.id_field is not None:
        raise InputError(
            f"{path}: WARC records are keyed by their offset in the file; --id-field does not "
            "apply (the WARC-Record-ID is kept in each document's meta)"
        )
    (whole,) = plan_file(path, source, fmt, options, splittable=False)
    total = input_size(path)
    if not _is_gzip(path) or _is_arc(path) or total <= options.chunk_bytes:
        return [whole]
    starts = [0]
    with open_input(path) as handle:
        while (found := _next_member(handle, starts[-1] + options.chunk_bytes, total)) is not None:
            starts.append(found)
    ends = [*starts[1:], None]
    return [
        dataclasses.replace(whole, start=s, end=e, first_line=s)
        for s, e in zip(starts, ends, strict=True)
    ]


def _head(path: str, offset: int) -> bytes:
    """The first RAW_CAP bytes of a file from `offset` (what a reject keeps of a record)."""
    with open_input(path) as handle:
        handle.seek(offset)
        return handle.read(RAW_CAP)


class _Batch:
    """Documents, rejects and skip counts gathered for one Parsed batch."""

    def __init__(self, extractor: Extractor) -> None:
        self.extractor = extractor
        self.columns: list[list[Any]] = [[], [], [], [], []]
        self.rejects: list[Reject] = []
        self.skipped: Counter[str] = Counter()

    def document(self, offset: int, text: str, domain: str | None, meta: dict[str, Any]) -> None:
        for column, value in zip(
            self.columns, (offset, text, None, domain, orjson.dumps(meta).decode()), strict=True
        ):
            column.append(value)

    def reject(self, offset: int, reason: str, detail: str, raw: bytes) -> None:
        self.rejects.append(self.extractor.reject(offset, reason, detail, raw))

    def __len__(self) -> int:
        return len(self.columns[0]) + len(self.rejects)

    def take(self) -> Parsed:
        table = pa.table(self.columns, schema=EXTRACTED_SCHEMA)
        parsed = Parsed(table, self.rejects, len(self.columns[0]) + len(self.rejects))
        parsed.skipped = self.skipped
        self.columns, self.rejects, self.skipped = [[], [], [], [], []], [], Counter()
        return parsed


def read_warc(chunk: Chunk, options: IngestOptions, extractor: Extractor) -> Iterator[Parsed]:
    """Parsed batches of one chunk of a WARC (or ARC) file."""
    from warcio.archiveiterator import ArchiveIterator

    batch = _Batch(extractor)
    with open_input(chunk.path) as handle:
        handle.seek(chunk.start)
        # ARC records as they are: warcio's arc2warc would give each a new random id
        records = ArchiveIterator(handle)
        while True:
            try:
                record = next(records)
            except StopIteration:
                break
            except Exception as error:  # warcio raises several types for a broken record
                offset = records.offset  # the record it could not parse (or finish)
                end = input_size(chunk.path) if chunk.end is None else chunk.end
                if offset < end:  # else the next chunk's record: that chunk reports it
                    detail = (
                        f"record at byte {offset} does not parse ({type(error).__name__}: "
                        f"{error}); the {end - offset} bytes from there to the end of the "
                        f"chunk are not read (first {RAW_CAP} kept)"
                    )
                    batch.reject(offset, "corrupt", detail, _head(chunk.path, offset))
                break
            offset = records.offset  # the start of this record (its gzip member)
            if chunk.end is not None and offset >= chunk.end:
                break  # the next chunk's first record
            _read_record(record, offset, chunk.path, options, batch)
            if len(batch) >= _BATCH:
                yield batch.take()
    yield batch.take()


def _skip_reason(record: Any) -> str | None:
    """Why a record is not a page to extract, or None when it is one."""
    if record.rec_type != "response":
        kind = record.rec_type
        return kind if kind == "arc_header" else f"warc_{kind}"
    http = record.http_headers
    if http is None or not http.protocol.upper().startswith("HTTP/"):
        return "not_http"
    status = http.get_statuscode()
    if status.startswith("3"):
        return "redirect"
    if status != "200":
        return "http_error"
    return None


def _read_record(
    record: Any, offset: int, path: str, options: IngestOptions, batch: _Batch
) -> None:
    """Turn one record into a document, a reject or a skip count."""
    reason = _skip_reason(record)
    if reason is not None:
        batch.skipped[reason] += 1
        return
    content_type = record.http_headers.get_header("Content-Type") or ""
    mime, _, params = content_type.partition(";")
    mime = mime.strip().lower()
    headers = record.rec_headers
    url = headers.get_header("WARC-Target-URI") or headers.get_header("uri") or ""
    if mime and mime not in _HTML_TYPES:  # left unread: warcio skips to the next record
        batch.skipped["not_html"] += 1
        return
    limit = options.max_doc_bytes
    try:
        body = record.content_stream().read(limit + 1)
    except Exception as error:  # a bad chunked or compressed content encoding
        detail = f"payload does not decode ({type(error).__name__}: {error})"
        batch.reject(offset, "undecodable", detail, _head(path, offset))
        return
    if not mime and not _looks_like_html(body):
        batch.skipped["not_html"] += 1
        return
    if len(body) > limit:
        detail = f"HTML payload over the {limit}-byte limit (first {RAW_CAP} bytes kept)"
        batch.reject(offset, "oversize", detail, body[:RAW_CAP])
        return
    missing = record.raw_stream.limit  # bytes the record's header promised but the file lacks
    if missing:
        detail = f"record cut off: {missing} bytes of its payload are missing (file truncated?)"
        batch.reject(offset, "truncated", detail, body[:RAW_CAP])
        return
    charset = next(
        (p.split("=", 1)[1] for p in params.split(";") if p.strip().lower().startswith("charset=")),
        None,
    )
    try:
        html, codec, charset_from = decode_html(body, charset)
    except Undecodable as error:
        batch.reject(offset, "undecodable", f"page does not decode: {error}", body[:RAW_CAP])
        return
    text = main_text(html, options.extractor)
    if not text:
        batch.skipped["no_text"] += 1
        return
    fetched = headers.get_header("WARC-Date") or _arc_date(headers.get_header("archive-date"))
    meta = {
        "url": url,
        "fetch_date": fetched,
        "warc_record_id": headers.get_header("WARC-Record-ID"),  # an ARC record has none
        "content_type": mime or None,
        "charset": codec,
        "charset_from": charset_from,
    }
    batch.document(offset, text, _host(url), {k: v for k, v in meta.items() if v is not None})


def _looks_like_html(body: bytes) -> bool:
    """A payload without a Content-Type that starts like an HTML page."""
    start = body[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith((b"<!doctype html", b"<html"))


def _arc_date(stamp: str | None) -> str | None:
    """An ARC archive date (YYYYMMDDhhmmss) in the ISO form WARC-Date has."""
    if not stamp or len(stamp) < 14 or not stamp[:14].isdigit():
        return stamp
    s = stamp
    return f"{s[:4]}-{s[4:6]}-{s[6:8]}T{s[8:10]}:{s[10:12]}:{s[12:14]}Z"


def _host(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None
