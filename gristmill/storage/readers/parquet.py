"""Parquet: planned by row group, read in record batches."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gristmill.errors import InputError
from gristmill.storage.readers.extract import Extractor
from gristmill.storage.readers.inputs import _fingerprint, is_url, open_input
from gristmill.storage.readers.options import Chunk, IngestOptions, Parsed


def _parquet_source(path: str) -> Any:
    """What pyarrow opens: a local path as it is (Arrow's own reader), a URL as a file object."""
    return open_input(path) if is_url(path) else contextlib.nullcontext(path)


def plan_parquet(path: str, source: str, fmt: str, options: IngestOptions) -> list[Chunk]:
    """A Parquet file's chunks: runs of row groups of about `chunk_bytes`."""
    fingerprint = _fingerprint(path)
    parquet_chunks = _row_group_chunks(path, source, fingerprint, options)  # checks it is Parquet
    # With an id field, one chunk per file, so duplicate ids are caught within it.
    whole = Chunk(path, source, fmt, fingerprint)
    return parquet_chunks if options.id_field is None else [whole]


def _row_group_chunks(
    path: str, source: str, fingerprint: str, options: IngestOptions
) -> list[Chunk]:
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


def read_parquet(chunk: Chunk, options: IngestOptions, extractor: Extractor) -> Iterator[Parsed]:
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
