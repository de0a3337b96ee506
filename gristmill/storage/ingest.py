"""Ingest work for one chunk: read, validate, assign stable ids, write shards and rejects.

This runs in workers. It writes only files whose names derive from the chunk's key, each
under a temporary name first, and returns metadata; the flow process records it in the catalog.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from gristmill.storage.catalog import ChunkResult, ShardInfo
from gristmill.storage.files import PARQUET_OPTIONS, file_hash
from gristmill.storage.readers import Chunk, IngestOptions, Parsed, Reject, read_chunk
from gristmill.storage.workspace import Workspace

DOCUMENT_SCHEMA = pa.schema(
    [
        ("doc_id", pa.uint64()),
        ("text", pa.string()),
        ("source", pa.string()),
        ("source_line", pa.int64()),
        ("domain", pa.string()),
        ("meta", pa.string()),
        ("n_bytes", pa.int64()),
    ]
)
REJECT_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("line", pa.int64()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw", pa.binary()),
    ]
)


def doc_id(corpus: str, source: str, key: str) -> int:
    """The stable id of a record: a 64-bit hash of its corpus, source and key."""
    return xxhash.xxh3_64_intdigest(f"{corpus}\x00{source}\x00{key}".encode())


class ShardWriter:
    """Rolls documents into zstd Parquet shards of about `shard_bytes` of text each."""

    def __init__(self, directory: Path, prefix: str, shard_bytes: int, workspace: Workspace):
        self.directory = directory
        self.prefix = prefix
        self.shard_bytes = shard_bytes
        self.workspace = workspace
        self.shards: list[ShardInfo] = []
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._rows = 0
        self._bytes = 0

    def write(self, table: pa.Table) -> None:
        """Append documents, starting a new shard when the current one is full."""
        if table.num_rows == 0:
            return
        if self._writer is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"{self.prefix}-{len(self.shards):05d}.parquet"
            self._tmp = self.directory / f".{name}.tmp-{os.getpid()}"
            self._writer = pq.ParquetWriter(self._tmp, DOCUMENT_SCHEMA, **PARQUET_OPTIONS)
        self._writer.write_table(table, row_group_size=64_000)
        self._rows += table.num_rows
        self._bytes += int(pc.sum(table["n_bytes"]).as_py() or 0)
        if self._bytes >= self.shard_bytes:
            self._finish()

    def _finish(self) -> None:
        assert self._writer is not None and self._tmp is not None
        self._writer.close()
        final = self.directory / f"{self.prefix}-{len(self.shards):05d}.parquet"
        os.replace(self._tmp, final)
        self.shards.append(
            ShardInfo(
                path=self.workspace.relative(final),
                rows=self._rows,
                text_bytes=self._bytes,
                file_bytes=final.stat().st_size,
                content_hash=file_hash(final),
            )
        )
        self._writer, self._tmp, self._rows, self._bytes = None, None, 0, 0

    def close(self) -> list[ShardInfo]:
        """Finish the last shard and return all shards written."""
        if self._writer is not None:
            self._finish()
        return self.shards


class DocumentBuilder:
    """Validates extracted records and turns them into documents with stable ids."""

    def __init__(self, corpus: str, source: str, options: IngestOptions) -> None:
        self.corpus = corpus
        self.source = source
        self.options = options
        self.default_domain = options.domain or corpus
        self._seen_ids: set[str] = set()
        self._prefix = f"{corpus}\x00{source}\x00"

    def build(self, parsed: Parsed) -> tuple[pa.Table, list[Reject]]:
        """Documents from a parsed batch, plus the records that fail validation."""
        table = parsed.table
        rejects = list(parsed.rejects)
        if table.num_rows == 0:
            return DOCUMENT_SCHEMA.empty_table(), rejects
        n_bytes = pc.binary_length(table["text"]).to_numpy(zero_copy_only=False)
        # utf8_is_space is false for "", so blank means empty or all whitespace
        has_text = ~np.asarray(pc.utf8_is_space(table["text"])) & (n_bytes > 0)
        keep = has_text.copy()
        oversize = n_bytes > self.options.max_doc_bytes
        keep &= ~oversize
        lines = table["line"].to_numpy()
        ids = table["id"].to_pylist() if self.options.id_field else None
        if ids is not None:
            for i, value in enumerate(ids):
                if not keep[i]:
                    continue
                if value is None:
                    keep[i] = False
                    rejects.append(self._reject(table, i, "missing_id", "the id field is missing"))
                elif value in self._seen_ids:
                    keep[i] = False
                    detail = f"id {value!r} appeared earlier in this source"
                    rejects.append(self._reject(table, i, "duplicate_id", detail))
                else:
                    self._seen_ids.add(value)
        for i in np.flatnonzero(~has_text):
            rejects.append(self._reject(table, int(i), "empty_text", "text is empty or blank"))
        for i in np.flatnonzero(oversize & has_text):
            detail = f"{int(n_bytes[i])} bytes, over the {self.options.max_doc_bytes}-byte limit"
            rejects.append(self._reject(table, int(i), "oversize", detail))
        if not keep.all():
            table = table.filter(pa.array(keep))
            n_bytes = n_bytes[keep]
            lines = lines[keep]
            if ids is not None:
                ids = [v for v, k in zip(ids, keep, strict=True) if k]
        if ids is not None:
            keys = [f"id:{v}" for v in ids]
        else:  # readers give an ordinal where several records can share a line
            ordinals = table["id"].to_pylist()
            keys = [
                f"line:{n}" if k is None else f"rec:{k}"
                for n, k in zip(lines, ordinals, strict=True)
            ]
        prefix = self._prefix
        hashes = np.fromiter(
            (xxhash.xxh3_64_intdigest((prefix + key).encode()) for key in keys),
            dtype=np.uint64,
            count=len(keys),
        )
        domain = pc.fill_null(table["domain"], self.default_domain)
        docs = pa.table(
            [
                pa.array(hashes, pa.uint64()),
                table["text"],
                pa.array(np.full(len(keys), self.source, dtype=object), pa.string()),
                table["line"],
                domain,
                table["meta"],
                pa.array(n_bytes, pa.int64()),
            ],
            schema=DOCUMENT_SCHEMA,
        )
        return docs, rejects

    def _reject(self, table: pa.Table, i: int, reason: str, detail: str) -> Reject:
        """A reject keeping the record as JSON: its text and the rest of its fields."""
        text, meta = table["text"][i].as_py(), table["meta"][i].as_py()
        raw = b'{"text":' + orjson.dumps(text) + b',"meta":' + meta.encode("utf-8") + b"}"
        return Reject(self.source, int(table["line"][i].as_py()), reason, detail, raw)


class RejectWriter:
    """Streams rejects of one chunk into a Parquet file (created only if there are any)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts: Counter[str] = Counter()
        self._writer: pq.ParquetWriter | None = None
        self._tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")

    def write(self, rejects: list[Reject]) -> None:
        """Append rejects."""
        if not rejects:
            return
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self._tmp, REJECT_SCHEMA, **PARQUET_OPTIONS)
        columns = [
            [r.source for r in rejects],
            [r.line for r in rejects],
            [r.reason for r in rejects],
            [r.detail for r in rejects],
            [r.raw for r in rejects],
        ]
        self._writer.write_table(pa.table(columns, schema=REJECT_SCHEMA))
        self.counts.update(r.reason for r in rejects)

    def close(self) -> bool:
        """Finish the file; True if any reject was written."""
        if self._writer is None:
            return False
        self._writer.close()
        os.replace(self._tmp, self.path)
        return True


def clear_partial_chunk(workspace: Workspace, corpus: str, chunk_key: str) -> None:
    """Remove files a killed run left for this chunk (none of them is in the catalog)."""
    for directory in (workspace.corpus_dir(corpus), workspace.rejects_dir(corpus)):
        if not directory.exists():
            continue
        for path in directory.iterdir():
            if path.name.startswith((f"{chunk_key}-", f"{chunk_key}.", f".{chunk_key}")):
                path.unlink(missing_ok=True)


def ingest_chunk(
    workspace_root: str, corpus: str, chunk: Chunk, options: IngestOptions
) -> ChunkResult:
    """Read one chunk into shards and rejects; safe to re-run after a crash."""
    workspace = Workspace(workspace_root)
    key = chunk.key(corpus, options.options_hash())
    clear_partial_chunk(workspace, corpus, key)
    shards = ShardWriter(workspace.corpus_dir(corpus), key, options.shard_bytes, workspace)
    rejects_path = workspace.rejects_dir(corpus) / f"{key}.parquet"
    reject_writer = RejectWriter(rejects_path)
    builder = DocumentBuilder(corpus, chunk.source, options)
    result = ChunkResult(chunk_key=key, source=chunk.source)
    skipped: Counter[str] = Counter()
    for parsed in read_chunk(chunk, options):
        docs, rejects = builder.build(parsed)
        shards.write(docs)
        reject_writer.write(rejects)
        skipped += parsed.skipped
        result.records_read += parsed.records + parsed.skipped.total()
        result.documents += docs.num_rows
        result.rejected += len(rejects)
    result.skipped = skipped.total()
    result.skip_counts = dict(skipped)
    result.shards = shards.close()
    if reject_writer.close():
        result.rejects_path = workspace.relative(rejects_path)
    result.reject_counts = dict(reject_writer.counts)
    return result
