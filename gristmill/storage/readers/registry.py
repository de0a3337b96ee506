"""One interface over the format readers: each format's planner and reader, and the dispatch."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from gristmill.errors import InputError
from gristmill.storage.readers.csv import plan_csv, read_csv
from gristmill.storage.readers.extract import Extractor
from gristmill.storage.readers.hf import plan_hf, read_hf
from gristmill.storage.readers.inputs import expand_inputs, input_size
from gristmill.storage.readers.jsonl import plan_jsonl, read_jsonl
from gristmill.storage.readers.options import Chunk, IngestOptions, Parsed
from gristmill.storage.readers.parquet import plan_parquet, read_parquet
from gristmill.storage.readers.txt import plan_txt, read_txt
from gristmill.storage.readers.warc import plan_warc, read_warc


@dataclass(frozen=True)
class Reader:
    """A format's planner (input file -> chunks) and reader (chunk -> parsed batches)."""

    plan: Callable[[str, str, str, IngestOptions], list[Chunk]]
    read: Callable[[Chunk, IngestOptions, Extractor], Iterator[Parsed]]


READERS: dict[str, Reader] = {
    "jsonl": Reader(plan_jsonl, read_jsonl),
    "parquet": Reader(plan_parquet, read_parquet),
    "csv": Reader(plan_csv, read_csv),
    "tsv": Reader(plan_csv, read_csv),
    "txt": Reader(plan_txt, read_txt),
    "hf": Reader(plan_hf, read_hf),
    "warc": Reader(plan_warc, read_warc),
}


def plan_chunks(
    paths: list[str], options: IngestOptions, skipped: list[dict[str, str]] | None = None
) -> list[Chunk]:
    """Split inputs into chunks: big plain JSONL/text files by byte range, Parquet by row group.

    Directory entries left out are appended to `skipped` (see `expand_inputs`)."""
    chunks: list[Chunk] = []
    for path, source, fmt in expand_inputs(paths, options, skipped):
        chunks.extend(READERS[fmt].plan(path, source, fmt, options))
    return chunks


def read_chunk(chunk: Chunk, options: IngestOptions) -> Iterator[Parsed]:
    """Parsed batches of one chunk, whatever its format."""
    extractor = Extractor(options, chunk.source)
    if chunk.format not in READERS:
        raise InputError(f"{chunk.path}: unknown format {chunk.format!r}")
    if chunk.format != "hf":  # byte ranges and row groups were planned for the file as it was
        planned, size = int(chunk.fingerprint.split(":", 1)[0]), input_size(chunk.path)
        if size != planned:
            raise InputError(
                f"{chunk.path}: changed after the ingest began ({planned} bytes when planned, "
                f"{size} now)"
            )
    yield from READERS[chunk.format].read(chunk, options, extractor)
