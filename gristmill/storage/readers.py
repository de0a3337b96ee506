"""Streaming readers: JSONL, Parquet, CSV/TSV, plain text and Hugging Face datasets.

Every reader yields `Parsed` batches of bounded size: a table with the columns
(line, text, id, domain, meta) and the records it could not use (`Reject`), each with its
file, line and reason. Nothing is read whole into memory except a single document.
"""

from __future__ import annotations

import atexit
import bz2
import codecs
import contextlib
import csv
import errno
import io
import json
import lzma
import os
import re
import stat
import threading
import zlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import duckdb
import fsspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq
import xxhash
import zstandard
from pydantic import BaseModel, ConfigDict, Field

from gristmill.errors import InputError

Format = Literal["jsonl", "parquet", "csv", "tsv", "txt", "hf"]
FORMATS: tuple[str, ...] = ("jsonl", "parquet", "csv", "tsv", "txt", "hf")
_COMPRESSED = (".gz", ".zst", ".zstd", ".bz2", ".xz")
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "txt",
    ".text": "txt",
    ".md": "txt",
}
_READ_SIZE = 1 << 20
RAW_CAP = 64 << 10  # a reject keeps at most this much of a huge record or an undecodable tail
EXTRACTED_SCHEMA = pa.schema(
    [
        ("line", pa.int64()),
        ("text", pa.string()),
        ("id", pa.string()),
        ("domain", pa.string()),
        ("meta", pa.string()),
    ]
)


class IngestOptions(BaseModel):
    """How to read raw records into documents."""

    model_config = ConfigDict(extra="forbid")

    format: Format | None = Field(None, description="input format; default: from the extension")
    text_field: str = Field("text", description="field holding the text (dotted for nested)")
    id_field: str | None = Field(None, description="field giving a stable record id")
    domain_field: str | None = Field(None, description="field giving the domain")
    url_field: str | None = Field(None, description="URL field whose host becomes the domain")
    domain: str | None = Field(None, description="constant domain (default: the corpus name)")
    txt_unit: Literal["file", "line", "paragraph"] = Field(
        "file", description="plain text: one document per file, per line or per paragraph"
    )
    separator: str | None = Field(None, description="plain text: documents end at this string")
    csv_header: bool = Field(True, description="CSV/TSV: the first row names the columns")
    csv_quoting: Literal["auto", "minimal", "none"] = Field(
        "auto", description="CSV/TSV quoting; auto = minimal for CSV, none for TSV"
    )
    hf_split: str | None = Field(None, description="Hugging Face: only this split")
    max_doc_bytes: int = Field(5_000_000, gt=0, description="longer documents are rejected")
    chunk_bytes: int = Field(64 << 20, gt=0, description="split large files into chunks")
    shard_bytes: int = Field(128 << 20, gt=0, description="text bytes per output shard")

    def options_hash(self) -> str:
        """Hash of the options that decide the documents and the chunks (not shard sizes)."""
        relevant = self.model_dump(exclude={"shard_bytes"})
        return xxhash.xxh3_64_hexdigest(json.dumps(relevant, sort_keys=True).encode())


@dataclass
class Reject:
    """A record that could not become a document, and why."""

    source: str
    line: int
    reason: str
    detail: str
    raw: bytes | None = None


@dataclass
class Parsed:
    """A batch of extracted records and the rejects found while extracting them."""

    table: pa.Table
    rejects: list[Reject] = field(default_factory=list)
    records: int = 0  # records read, rejected ones included


@dataclass(frozen=True)
class Chunk:
    """One unit of ingest work: a whole input or a range of it."""

    path: str
    source: str
    format: str
    fingerprint: str
    start: int = 0
    end: int | None = None
    first_line: int = 1
    split: str | None = None

    def key(self, corpus: str, options_hash: str) -> str:
        """Stable identity of this chunk's work (same input and options -> same key)."""
        parts = [corpus, self.source, self.fingerprint, options_hash, self.start, self.end]
        return xxhash.xxh3_64_hexdigest(json.dumps([*parts, self.split]).encode())


# -- planning ------------------------------------------------------------------------------------
def detect_format(path: Path) -> str:
    """The format of a file from its extension, or InputError naming it."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _EXTENSIONS:
        return _EXTENSIONS[suffixes[-1]]
    raise InputError(
        f"{path}: unknown format (extension {''.join(path.suffixes) or 'none'}); "
        f"pass --format with one of {', '.join(FORMATS)}"
    )


def _is_hf_dataset_dir(path: Path) -> bool:
    return (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()


def is_url(path: str) -> bool:
    """True for an fsspec URL (`s3://...`, `memory://...`) rather than a local path."""
    return "://" in path


# An input that vanished or cannot be read: bad input (exit 2, no retries), not a transient error.
_UNREADABLE = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def _unreadable_input(path: str, error: OSError) -> InputError:
    """The InputError naming an input that vanished or cannot be read, and why."""
    if isinstance(error, FileNotFoundError | NotADirectoryError):
        why = "no longer exists (deleted or moved after the ingest began?)"
    elif isinstance(error, PermissionError):
        why = "not readable (permission denied)"
    else:
        why = "is a directory, not a file"
    return InputError(f"{path}: {why}")


def open_input(path: str) -> Any:
    """Open a local path or an fsspec URL for binary reading."""
    try:
        return fsspec.open(path, "rb").open() if is_url(path) else open(path, "rb")
    except _UNREADABLE as error:
        raise _unreadable_input(path, error) from None


def _parquet_source(path: str) -> Any:
    """What pyarrow opens: a local path as it is (Arrow's own reader), a URL as a file object."""
    return open_input(path) if is_url(path) else contextlib.nullcontext(path)


def input_size(path: str) -> int:
    """Size in bytes of a local path or an fsspec URL."""
    try:
        if not is_url(path):
            return os.path.getsize(path)
        fs, inner = fsspec.core.url_to_fs(path)
        return int(fs.size(inner))
    except _UNREADABLE as error:
        raise _unreadable_input(path, error) from None


def _fingerprint(path: str) -> str:
    """Size plus a hash of the first and last MiB: cheap, and changes when the file does."""
    size = input_size(path)
    digest = xxhash.xxh3_64()
    with open_input(path) as handle:
        digest.update(handle.read(_READ_SIZE))
        if size > 2 * _READ_SIZE:
            handle.seek(size - _READ_SIZE)
            digest.update(handle.read(_READ_SIZE))
    return f"{size}:{digest.hexdigest()}"


def expand_inputs(
    paths: list[str], options: IngestOptions, skipped: list[dict[str, str]] | None = None
) -> list[tuple[str, str, str]]:
    """(path, source key, format) for every input file; InputError for unreadable or unknown.

    Directory entries left out are appended to `skipped` as {"path", "reason"}: hidden
    files and directories ("hidden"), symbolic links that loop ("symlink_loop") or lead
    nowhere ("broken_symlink"), and sockets, pipes and devices ("not_a_file").
    """
    found: list[tuple[str, str, str]] = []
    skipped = [] if skipped is None else skipped
    for given in paths:
        if given.startswith("file://"):  # a local file is read as one, whatever the runner
            given = fsspec.core.url_to_fs(given)[1]
        elif is_url(given) and options.format != "hf":
            found.extend(_expand_url(given, options, skipped))
            continue
        path = Path(given).expanduser()
        if options.format == "hf" or (path.is_dir() and _is_hf_dataset_dir(path)):
            source = path.name if path.exists() else given
            found.append((str(path.resolve()) if path.exists() else given, source, "hf"))
            continue
        if not path.exists():
            raise InputError(f"{given}: no such file or directory")
        if path.is_dir():
            before = len(skipped)
            files = sorted(_directory_files(path, given, skipped))
            if not files:
                left_out = skipped[before:]
                reasons = ", ".join(sorted({s["reason"] for s in left_out}))
                note = f" ({len(left_out)} entries skipped: {reasons})" if left_out else ""
                raise InputError(f"{given}: directory has no files{note}")
            for file in files:
                source = f"{path.resolve().name}/{file.relative_to(path).as_posix()}"
                found.append((str(file.resolve()), source, options.format or detect_format(file)))
        else:
            found.append((str(path.resolve()), path.name, options.format or detect_format(path)))
    seen: dict[str, str] = {}
    for file, source, _fmt in found:
        if Path(file).exists() and not os.access(file, os.R_OK):
            raise InputError(f"{file}: not readable (permission denied)")
        if source in seen and seen[source] != file:
            raise InputError(
                f"{file} and {seen[source]} would both be source {source!r} (ids derive from it); "
                "ingest them in separate commands or pass their common directory instead"
            )
        seen[source] = file
    return found


def _directory_files(root: Path, shown: str, skipped: list[dict[str, str]]) -> list[Path]:
    """Regular files under a directory, following symbolic links; what is left out goes to
    `skipped`, named as `shown` (the directory as given) joined with its place inside."""
    files: list[Path] = []
    top = root.stat()
    stack = [(root, frozenset({(top.st_dev, top.st_ino)}))]  # with the directories above it
    while stack:
        directory, above = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as error:
            raise _unreadable_input(str(directory), error) from None
        for entry in entries:
            path = Path(entry.path)
            reason, info = _entry_status(entry)
            if info is not None and stat.S_ISDIR(info.st_mode):
                identity = (info.st_dev, info.st_ino)
                if identity not in above:
                    stack.append((path, above | {identity}))
                    continue
                reason = "symlink_loop"  # a link back to a directory it is inside
            elif info is not None and stat.S_ISREG(info.st_mode):
                files.append(path)
                continue
            elif info is not None:
                reason = "not_a_file"  # a socket, pipe or device: reading it could block
            skipped.append({"path": str(Path(shown) / path.relative_to(root)), "reason": reason})
    return files


def _entry_status(entry: os.DirEntry) -> tuple[str, os.stat_result | None]:
    """A directory entry's status through links, or why it is skipped (status None)."""
    if entry.name.startswith("."):
        return "hidden", None
    try:
        return "", os.stat(entry.path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symlink_loop", None
        if entry.is_symlink() and error.errno == errno.ENOENT:
            return "broken_symlink", None
        raise _unreadable_input(entry.path, error) from None


def _expand_url(
    url: str, options: IngestOptions, skipped: list[dict[str, str]]
) -> list[tuple[str, str, str]]:
    """Files under an fsspec URL, with source keys as for a local file or directory."""
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    if not fs.exists(root):
        raise InputError(f"{url}: no such file or directory")
    if not fs.isdir(root):
        name = root.rsplit("/", 1)[-1]
        return [(url, name, options.format or detect_format(Path(name)))]
    base = root.rsplit("/", 1)[-1]
    found = []
    for file in sorted(fs.find(root)):
        inside = file[len(root) :].lstrip("/")
        if any(part.startswith(".") for part in inside.split("/")):
            skipped.append({"path": f"{url.rstrip('/')}/{inside}", "reason": "hidden"})
            continue
        fmt = options.format or detect_format(Path(inside))
        found.append((fs.unstrip_protocol(file), f"{base}/{inside}", fmt))
    if not found:
        raise InputError(f"{url}: directory has no files")
    return found


def plan_chunks(
    paths: list[str], options: IngestOptions, skipped: list[dict[str, str]] | None = None
) -> list[Chunk]:
    """Split inputs into chunks: big plain JSONL/text files by byte range, Parquet by row group.

    Directory entries left out are appended to `skipped` (see `expand_inputs`)."""
    chunks: list[Chunk] = []
    for path, source, fmt in expand_inputs(paths, options, skipped):
        if fmt == "hf":
            chunks.extend(_plan_hf(path, source, options))
            continue
        fingerprint = _fingerprint(path)
        by_line = fmt == "txt" and options.txt_unit == "line" and options.separator is None
        splittable = fmt == "jsonl" or by_line
        compressed = Path(path).suffix.lower() in _COMPRESSED
        if fmt == "parquet":
            parquet_chunks = _plan_parquet(path, source, fingerprint, options)
            # With an id field, one chunk per file, so duplicate ids are caught within it.
            whole = Chunk(path, source, fmt, fingerprint)
            chunks.extend(parquet_chunks if options.id_field is None else [whole])
        elif splittable and not compressed and options.id_field is None:
            chunks.extend(_plan_byte_ranges(path, source, fmt, fingerprint, options.chunk_bytes))
        else:
            chunks.append(Chunk(path, source, fmt, fingerprint))
    return chunks


def _plan_byte_ranges(path: str, source: str, fmt: str, fingerprint: str, size: int) -> list[Chunk]:
    """Cut a file at line boundaries near every `size` bytes, counting lines to keep numbering."""
    total = input_size(path)
    if total <= size:
        return [Chunk(path, source, fmt, fingerprint)]
    chunks = []
    with open_input(path) as handle:
        start, line = 0, 1
        while start < total:
            handle.seek(min(start + size, total))
            handle.readline()
            end = min(handle.tell(), total)
            chunks.append(Chunk(path, source, fmt, fingerprint, start, end, line))
            handle.seek(start)
            remaining = end - start
            while remaining > 0:
                block = handle.read(min(_READ_SIZE * 16, remaining))
                line += block.count(b"\n")
                remaining -= len(block)
            start = end
    return chunks


def _plan_parquet(path: str, source: str, fingerprint: str, options: IngestOptions) -> list[Chunk]:
    try:
        with _parquet_source(path) as opened:
            meta = pq.ParquetFile(opened).metadata
    except (pa.ArrowInvalid, OSError) as error:
        raise InputError(f"{path}: not a readable Parquet file ({error})") from None
    chunks, start, size, first = [], 0, 0, 0
    for group in range(meta.num_row_groups):
        size += meta.row_group(group).total_byte_size
        if size >= options.chunk_bytes or group == meta.num_row_groups - 1:
            chunks.append(Chunk(path, source, "parquet", fingerprint, start, group + 1, first + 1))
            first += sum(meta.row_group(g).num_rows for g in range(start, group + 1))
            start, size = group + 1, 0
    return chunks or [Chunk(path, source, "parquet", fingerprint)]


def _hub_offline() -> bool:
    flags = (os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(v.strip().lower() in {"1", "true", "yes", "on"} for v in flags)


def _plan_hf(path: str, source: str, options: IngestOptions) -> list[Chunk]:
    import datasets

    if not Path(path).exists():
        if _hub_offline():
            raise InputError(
                f"{path}: not a local dataset directory, and the Hugging Face Hub is offline "
                "(HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set); save the dataset with "
                "`save_to_disk` and ingest that directory"
            )
        splits = [options.hf_split] if options.hf_split else ["train"]
        return [Chunk(path, f"{source}/{s}", "hf", f"hub:{path}", split=s) for s in splits]
    try:
        loaded = datasets.load_from_disk(path)
    except Exception as error:  # datasets raises several types for a bad directory
        message = f"{path}: not a Hugging Face dataset saved with save_to_disk ({error})"
        raise InputError(message) from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = [options.hf_split] if options.hf_split else list(loaded)
        missing = [s for s in splits if s not in loaded]
        if missing:
            raise InputError(f"{path}: no split {missing[0]!r} (splits: {', '.join(loaded)})")
    else:
        splits = [None]
    fingerprint = f"hf:{loaded._fingerprint if splits == [None] else ''}"
    if splits != [None]:
        fingerprint += ",".join(f"{s}={loaded[s]._fingerprint}" for s in splits)
    return [
        Chunk(path, f"{source}/{s}" if s else source, "hf", fingerprint, split=s) for s in splits
    ]


# -- raw byte streams ----------------------------------------------------------------------------
_CODEC_NAMES = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bzip2", ".xz": "xz"}
_CODEC_ERRORS = (zlib.error, zstandard.ZstdError, OSError, lzma.LZMAError, EOFError)


class _Undecodable(Exception):
    """Compressed bytes that do not decode; `out` is what the stream gave before them."""

    def __init__(self, out: bytes, error: Exception) -> None:
        super().__init__(str(error))
        self.out = out


class _Decompressor:
    """Incremental decompression of one or more members that keeps every byte it decoded."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix
        self.members = 0  # members decoded to their end marker
        self.member_start = 0  # offset in the file of the member being decoded
        self.member_output = False  # whether that member has given any bytes yet
        self.fed = 0  # compressed bytes fed so far
        self._new()

    def _new(self) -> None:
        if self.suffix == ".gz":
            self.obj = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header
        elif self.suffix in (".zst", ".zstd"):
            self.obj = zstandard.ZstdDecompressor().decompressobj()
        elif self.suffix == ".bz2":
            self.obj = bz2.BZ2Decompressor()
        else:
            self.obj = lzma.LZMADecompressor()
        self.member_output = False

    def feed(self, data: bytes) -> bytes:
        """The bytes `data` decodes to; _Undecodable (with those before it) where it cannot."""
        out: list[bytes] = []
        self.fed += len(data)
        while data:
            try:
                piece = self.obj.decompress(data)
            except _CODEC_ERRORS as error:
                raise _Undecodable(b"".join(out), error) from None
            if piece:
                out.append(piece)
                self.member_output = True
            if not self.obj.eof:
                break
            data = self.obj.unused_data  # the next member of a multi-member stream
            self.members += 1
            self.member_start = self.fed - len(data)
            self._new()
        return b"".join(out)

    @property
    def complete(self) -> bool:
        """True when the input so far ends exactly after a member's end marker."""
        return self.members > 0 and self.member_start == self.fed


@dataclass
class StreamState:
    """What a raw stream learned about its end.

    `problem`: a member was cut (truncated or corrupt), so the last record read may be cut too.
    `tail`: bytes that decoded to nothing, as (reason, detail, first RAW_CAP bytes); they are
    one reject of their own, after every record before them.
    """

    problem: str | None = None
    tail: tuple[str, str, bytes] | None = None


def _stream_end(
    state: StreamState, decoder: _Decompressor, handle: Any, path: str, error: str | None
) -> None:
    """Record why a compressed stream stopped before a clean end."""
    if decoder.member_output:
        state.problem = (
            f"corrupt compressed stream ({error})"
            if error
            else "truncated compressed stream (the file ends before its end marker)"
        )
        return
    # Nothing of the current member decoded: keep its compressed bytes as they are.
    handle.seek(decoder.member_start)
    head = handle.read(RAW_CAP)
    size = input_size(path) - decoder.member_start
    codec = _CODEC_NAMES[Path(path).suffix.lower()]
    kept = f"first {RAW_CAP} bytes kept"
    if decoder.members:
        why = error or "the file ends inside them"
        detail = f"{size} bytes after the last complete {codec} member do not decode ({why})"
        state.tail = ("trailing_garbage", f"{detail}; {kept}", head)
    elif error:
        state.tail = ("undecodable", f"not {codec} data ({error}); {kept}", head)
    else:
        detail = f"the file ends before any of its {size} bytes decoded as {codec}; {kept}"
        state.tail = ("truncated", detail, head)


def raw_chunks(
    path: str, start: int = 0, end: int | None = None
) -> tuple[Iterator[bytes], StreamState]:
    """Decompressed bytes of a file (or a byte range of an uncompressed one) in pieces."""
    state = StreamState()
    suffix = Path(path).suffix.lower()

    def generate() -> Iterator[bytes]:
        with open_input(path) as handle:
            if suffix not in _COMPRESSED:
                handle.seek(start)
                remaining = None if end is None else end - start
                while remaining is None or remaining > 0:
                    piece = handle.read(
                        _READ_SIZE if remaining is None else min(_READ_SIZE, remaining)
                    )
                    if not piece:
                        return
                    if remaining is not None:
                        remaining -= len(piece)
                    yield piece
                return
            decoder = _Decompressor(suffix)
            while piece := handle.read(_READ_SIZE):
                try:
                    out = decoder.feed(piece)
                except _Undecodable as undecodable:
                    if undecodable.out:
                        yield undecodable.out
                    _stream_end(state, decoder, handle, path, str(undecodable))
                    return
                if out:
                    yield out
            if decoder.fed and not decoder.complete:
                _stream_end(state, decoder, handle, path, None)

    return generate(), state


def _tail_reject(extractor: Extractor, state: StreamState, line: int) -> list[Reject]:
    """The reject for a stream's undecodable tail, if it has one."""
    if state.tail is None:
        return []
    reason, detail, raw = state.tail
    return [extractor.reject(line, reason, detail, raw)]


@dataclass
class LineBlock:
    """Whole lines of input and the number of the first one."""

    data: bytes
    first_line: int


def line_blocks(
    path: str,
    start: int,
    end: int | None,
    first_line: int,
    block_size: int,
    max_line: int,
    on_oversize: Callable[[int, bytes], None],
    state_out: list[StreamState],
) -> Iterator[LineBlock]:
    """Newline-aligned blocks of about `block_size` bytes; lines over `max_line` are cut out."""
    pieces, state = raw_chunks(path, start, end)
    state_out.append(state)
    buffer = bytearray()
    line = first_line
    skipping: int | None = None  # line number of an oversize line being skipped
    for piece in pieces:
        if skipping is not None:
            cut = piece.find(b"\n")
            if cut < 0:
                continue
            piece = piece[cut + 1 :]
            line += 1
            skipping = None
        buffer += piece
        if len(buffer) >= block_size:
            cut = buffer.rfind(b"\n") + 1
            if cut:
                block = bytes(buffer[:cut])
                del buffer[:cut]
                yield LineBlock(block, line)
                line += block.count(b"\n")
            elif len(buffer) > max_line:
                on_oversize(line, bytes(buffer[:RAW_CAP]))
                buffer.clear()
                skipping = line
    if skipping is None and buffer:
        yield LineBlock(bytes(buffer), line)


# -- extraction helpers --------------------------------------------------------------------------
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


# JSON text read as written, for what parsing and re-encoding would change.
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},:]', re.DOTALL)
_SPACED_KEY_END = re.compile(rb'"\s+:')
_HUGE = 2.0**63
_ARROW_MAX_DEPTH = 64  # Arrow's JSON reader recurses per level and crashes past a few thousand


class _BadRecord(Exception):
    """A JSON line that cannot become a record: the reject's reason and detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class _RepeatedKey(Exception):
    """A JSON object names a key twice."""


def _object_members(raw: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """(key, member, value) of each top-level member of a JSON object, exactly as written."""
    members: list[tuple[bytes, bytes, bytes]] = []
    depth, start, colon = 0, 0, 0
    key: bytes | None = None
    for token in _JSON_TOKEN.finditer(raw):
        at = token.start()
        char = raw[at]
        if char == 0x22:  # a string: the key when it opens a member
            if depth == 1 and key is None:
                key = token.group()
        elif char == 0x3A:  # ':'
            if depth == 1:
                colon = token.end()
        elif char in (0x5B, 0x7B):  # '[' '{'
            depth += 1
            if depth == 1:
                start = token.end()
        else:  # ',' ']' '}'
            if depth == 1 and key is not None and char != 0x5D:
                members.append((key, raw[start:at].strip(), raw[colon:at].strip()))
                start, key = token.end(), None
            if char != 0x2C:
                depth -= 1
    return members


def _verbatim_meta(raw: bytes, text_key: str | None) -> str:
    """Meta as the record wrote it: its other non-null members, repeated keys, numbers beyond
    64 bits, NaN and all. A repeated text key gives its last value to the text, as parsers do."""
    members = _object_members(raw)
    keys = [json.loads(key) for key, _, _ in members]
    text_at = max((i for i, key in enumerate(keys) if key == text_key), default=-1)
    kept = [m for i, (_, m, value) in enumerate(members) if i != text_at and value != b"null"]
    return (b"{" + b",".join(kept) + b"}").decode("utf-8")


def _load_json_line(raw: bytes, faithful: bool = False) -> tuple[Any, int | None]:
    """A JSON line's value and the keys of all its objects; None instead of a count where
    encoding the value again would change the record (integers beyond 64 bits, NaN,
    Infinity, 1e400). _BadRecord if the line cannot be a record. `faithful`: Arrow read the
    line, so no number is beyond a double and the keys need no count (0 is returned)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    else:
        if faithful:
            return value, 0
        keys, huge = _walk_json(value)
        if not huge:
            return value, keys
        # orjson reads an integer beyond 64 bits as a float; json reads it exactly.
        with contextlib.suppress(RecursionError):
            value = json.loads(raw)
        return value, None
    try:  # json reads what orjson refuses: NaN, Infinity, 1e400, lone surrogates
        value = json.loads(raw)
    except RecursionError:
        detail = "nested too deep to parse (about 1,000 levels)"
        raise _BadRecord("malformed_json", detail) from None
    except ValueError as error:
        raise _BadRecord("malformed_json", str(error)) from None
    if _has_lone_surrogate(value):
        detail = "a \\ud800-\\udfff escape without its pair: the text has no UTF-8 form"
        raise _BadRecord("invalid_text", detail)
    return value, None


def _written_keys(data: bytes) -> int | None:
    """How many keys some JSON text writes, counted without parsing; None where counting
    cannot tell (a key with whitespace before its ':', or one ending in a backslash).

    Otherwise a key ends in '":', and a '":' inside a string has its quote escaped.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    pair = 0x3A22  # '":' read as a little-endian 16-bit word, at even and at odd offsets
    even = np.frombuffer(data, dtype="<u2", count=len(data) // 2)
    odd = np.frombuffer(data, dtype="<u2", offset=1, count=(len(data) - 1) // 2)
    at = np.concatenate((np.flatnonzero(even == pair) * 2, np.flatnonzero(odd == pair) * 2 + 1))
    at = at[at >= 2]  # a key's closing quote comes after '{"' at least
    escaped = arr[at - 1] == 0x5C
    if np.any(escaped & (arr[at - 2] == 0x5C)):
        return None  # '\\":' ends a key in a backslash, or escapes a quote after one
    if _SPACED_KEY_END.search(data):
        for match in _SPACED_KEY_END.finditer(data):
            quote = match.start()
            if data[quote - 1] != 0x5C or data[quote - 2] == 0x5C:  # not escaped in a string
                return None
    return int(len(at) - np.count_nonzero(escaped))


def _repeats_keys(raw: bytes) -> bool:
    """Whether some object of a JSON line repeats a key."""

    def unique(pairs: list[tuple[str, Any]]) -> dict:
        found = dict(pairs)
        if len(found) != len(pairs):
            raise _RepeatedKey
        return found

    try:
        json.loads(raw, object_pairs_hook=unique)
    except (_RepeatedKey, RecursionError):
        return True  # repeated, or too deep to tell: keep it as written either way
    return False


def _walk_json(value: Any) -> tuple[int, bool]:
    """Keys of every object in a parsed JSON value, and whether it holds a float of 2**63 or
    more (where an integer beyond 64 bits may have been)."""
    count, huge, stack = 0, False, [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            count += len(item)
            item = item.values()
        elif kind is not list:
            huge = huge or (kind is float and not -_HUGE < item < _HUGE)
            continue
        for v in item:
            kind = type(v)
            if kind is dict or kind is list:
                stack.append(v)
            elif kind is float and not -_HUGE < v < _HUGE:
                huge = True
    return count, huge


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a key or string of a parsed JSON value holds half a surrogate pair."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _nests_deeper(
    data: bytes, arr: np.ndarray, starts: np.ndarray, ends: np.ndarray, limit: int
) -> bool:
    """Whether a line of a block nests brackets deeper than `limit`."""
    opening = np.flatnonzero(np.bitwise_or(arr, 0x20) == 0x7B)  # '[' and '{'
    if len(opening) <= limit:
        return False
    per_line = np.bincount(np.searchsorted(starts, opening, "right") - 1, minlength=len(starts))
    for i in np.flatnonzero(per_line > limit):  # only these can; count exactly (strings skipped)
        depth = 0
        for token in _JSON_TOKEN.finditer(data, int(starts[i]), int(ends[i])):
            char = data[token.start()]
            if char in (0x5B, 0x7B):
                depth += 1
                if depth > limit:
                    return True
            elif char in (0x5D, 0x7D):
                depth -= 1
    return False


def _inexact_numbers(table: pa.Table) -> bool:
    """Whether a float column holds NaN, an infinity or a magnitude past 2**53: there Arrow's
    double may not be the number as written (integers beyond 64 bits become doubles)."""
    stack: list[Any] = list(table.columns)
    while stack:
        column = stack.pop()
        dtype = column.type
        if pa.types.is_floating(dtype):
            odd = pc.or_kleene(
                pc.invert(pc.is_finite(column)), pc.greater_equal(pc.abs(column), 2.0**53)
            )
            if pc.any(odd).as_py():
                return True
        elif pa.types.is_struct(dtype):
            stack.extend(pc.struct_field(column, [i]) for i in range(dtype.num_fields))
        elif pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
            stack.append(pc.list_flatten(column))
    return False


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


# -- format readers ------------------------------------------------------------------------------
def read_chunk(chunk: Chunk, options: IngestOptions) -> Iterator[Parsed]:
    """Parsed batches of one chunk, whatever its format."""
    extractor = Extractor(options, chunk.source)
    readers = {
        "jsonl": _read_jsonl,
        "csv": _read_csv,
        "tsv": _read_csv,
        "txt": _read_txt,
        "parquet": _read_parquet,
        "hf": _read_hf,
    }
    if chunk.format not in readers:
        raise InputError(f"{chunk.path}: unknown format {chunk.format!r}")
    if chunk.format != "hf":  # byte ranges and row groups were planned for the file as it was
        planned, size = int(chunk.fingerprint.split(":", 1)[0]), input_size(chunk.path)
        if size != planned:
            raise InputError(
                f"{chunk.path}: changed after the ingest began ({planned} bytes when planned, "
                f"{size} now)"
            )
    yield from readers[chunk.format](chunk, options, extractor)


def _max_line(options: IngestOptions) -> int:
    # JSON escaping can double a text's size; past this a line is surely an oversize document.
    return max(4 * options.max_doc_bytes, 16 << 20)


def _truncation(extractor: Extractor, state: StreamState, line: int, raw: bytes) -> Parsed:
    reject = extractor.reject(line, "truncated", state.problem or "truncated", raw)
    return Parsed(pa.Table.from_pylist([], EXTRACTED_SCHEMA), [reject], records=1)


def _read_jsonl(chunk: Chunk, options: IngestOptions, extractor: Extractor) -> Iterator[Parsed]:
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


def _has_surrogates(values: list[str]) -> bool:
    return any(any("\udc80" <= ch <= "\udcff" for ch in v) for v in values if not v.isascii())


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


def _read_csv(chunk: Chunk, options: IngestOptions, extractor: Extractor) -> Iterator[Parsed]:
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


def _read_txt(chunk: Chunk, options: IngestOptions, extractor: Extractor) -> Iterator[Parsed]:
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


def _read_parquet(chunk: Chunk, options: IngestOptions, extractor: Extractor) -> Iterator[Parsed]:
    with _parquet_source(chunk.path) as opened:
        try:
            file = pq.ParquetFile(opened)
        except (pa.ArrowInvalid, OSError) as error:
            raise InputError(f"{chunk.path}: not a readable Parquet file ({error})") from None
        end = chunk.end if chunk.end is not None else file.num_row_groups
        row = chunk.first_line
        for batch in file.iter_batches(batch_size=16_384, row_groups=list(range(chunk.start, end))):
            table = pa.Table.from_batches([batch])
            lines = np.arange(row, row + table.num_rows, dtype=np.int64)
            row += table.num_rows
            yield extractor.from_table(table, lines)


def _read_hf(chunk: Chunk, options: IngestOptions, extractor: Extractor) -> Iterator[Parsed]:
    import datasets

    if chunk.fingerprint.startswith("hub:"):
        stream = datasets.load_dataset(chunk.path, split=chunk.split, streaming=True)
        batch: list[tuple[int, Any, bytes]] = []
        for number, record in enumerate(stream, start=1):
            batch.append((number, record, b""))
            if len(batch) >= 10_000:
                yield extractor.from_dicts(batch)
                batch = []
        yield extractor.from_dicts(batch)
        return
    try:
        loaded = datasets.load_from_disk(chunk.path)
    except _UNREADABLE as error:
        raise _unreadable_input(chunk.path, error) from None
    dataset = loaded[chunk.split] if chunk.split is not None else loaded
    row = 1
    for table in dataset.with_format("arrow").iter(batch_size=16_384):
        lines = np.arange(row, row + table.num_rows, dtype=np.int64)
        row += table.num_rows
        yield extractor.from_table(table, lines)
