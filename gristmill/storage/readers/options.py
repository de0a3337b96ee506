"""Ingest options and the records that flow from readers: IngestOptions, Chunk, Parsed, Reject."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, get_args

import pyarrow as pa
import xxhash
from pydantic import BaseModel, ConfigDict, Field

Format = Literal["jsonl", "parquet", "csv", "tsv", "txt", "hf", "warc"]
FORMATS: tuple[str, ...] = get_args(Format)
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
    ".warc": "warc",
    ".arc": "warc",  # the legacy Internet Archive format; the WARC reader reads it too
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
    extractor: Literal["trafilatura", "resiliparse"] = Field(
        "trafilatura", description="WARC: main-text extractor for HTML pages"
    )
    max_doc_bytes: int = Field(5_000_000, gt=0, description="longer documents are rejected")
    chunk_bytes: int = Field(64 << 20, gt=0, description="split large files into chunks")
    shard_bytes: int = Field(128 << 20, gt=0, description="text bytes per output shard")

    def options_hash(self) -> str:
        """Hash of the options that decide the documents and the chunks (not shard sizes)."""
        relevant = self.model_dump(exclude={"shard_bytes"})
        if self.extractor == "trafilatura":  # the default: hashes stay those of before it
            del relevant["extractor"]
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
    records: int = 0  # records read, rejected ones included (skipped ones are not)
    # Records that are not documents by design (a WARC's requests, redirects, images, ...),
    # by reason: neither documents nor rejects.
    skipped: Counter[str] = field(default_factory=Counter)


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
