"""Raw byte streams: decompression that keeps every decoded byte, raw pieces and line blocks."""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

from gristmill.storage.readers.extract import Extractor
from gristmill.storage.readers.inputs import input_size, open_input
from gristmill.storage.readers.options import _COMPRESSED, _READ_SIZE, RAW_CAP, Reject

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


def line_end_after(path: str, offset: int) -> int | None:
    """The byte just past the first newline at or after `offset` in an uncompressed file;
    None for a compressed file or when the file ends first (no shorter range to read)."""
    if Path(path).suffix.lower() in _COMPRESSED:
        return None
    with open_input(path) as handle:
        handle.seek(offset)
        while piece := handle.read(1 << 16):
            cut = piece.find(b"\n")
            if cut >= 0:
                return offset + cut + 1
            offset += len(piece)
    return None


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
