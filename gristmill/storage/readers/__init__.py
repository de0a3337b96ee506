"""Streaming readers: JSONL, Parquet, CSV/TSV, plain text, Hugging Face datasets and WARC.

Every reader yields `Parsed` batches of bounded size: a table with the columns
(line, text, id, domain, meta) and the records it could not use (`Reject`), each with its
file, line and reason. Nothing is read whole into memory except a single document.

One module per format (jsonl, csv, txt, parquet, hf, warc; html gives pages' text), each a
planner and a reader behind `registry.READERS`; `plan_chunks` and `read_chunk` dispatch through it.
"""

from gristmill.storage.readers.extract import Extractor
from gristmill.storage.readers.inputs import (
    detect_format,
    expand_inputs,
    input_size,
    is_url,
    open_input,
)
from gristmill.storage.readers.options import (
    EXTRACTED_SCHEMA,
    FORMATS,
    RAW_CAP,
    Chunk,
    Format,
    IngestOptions,
    Parsed,
    Reject,
)
from gristmill.storage.readers.registry import READERS, Reader, plan_chunks, read_chunk
from gristmill.storage.readers.stream import LineBlock, StreamState, line_blocks, raw_chunks

__all__ = [
    "EXTRACTED_SCHEMA",
    "FORMATS",
    "RAW_CAP",
    "READERS",
    "Chunk",
    "Extractor",
    "Format",
    "IngestOptions",
    "LineBlock",
    "Parsed",
    "Reader",
    "Reject",
    "StreamState",
    "detect_format",
    "expand_inputs",
    "input_size",
    "is_url",
    "line_blocks",
    "open_input",
    "plan_chunks",
    "raw_chunks",
    "read_chunk",
]
