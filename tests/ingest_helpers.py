"""Test helper: ingest inputs through the library (no Prefect) and check the books."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gristmill import pipeline
from gristmill.storage.catalog import ChunkResult
from gristmill.storage.ingest import DOCUMENT_SCHEMA, REJECT_SCHEMA, ingest_chunk
from gristmill.storage.readers import IngestOptions, plan_chunks
from gristmill.storage.workspace import Workspace

CORPUS = "corp"


@dataclass
class Ingested:
    """What ingesting some inputs produced: per-chunk results, all documents, all rejects."""

    results: list[ChunkResult]
    docs: pa.Table
    rejects: pa.Table

    def rows(self) -> list[dict]:
        """Documents as dicts, in (source, source_line) order."""
        return sorted(self.docs.to_pylist(), key=lambda r: (r["source"], r["source_line"]))

    def texts(self) -> list[str]:
        return [r["text"] for r in self.rows()]

    def lines(self) -> list[int]:
        return [r["source_line"] for r in self.rows()]

    def reject_rows(self) -> list[dict]:
        return sorted(self.rejects.to_pylist(), key=lambda r: (r["source"], r["line"]))

    def reasons(self) -> list[tuple[int, str]]:
        return [(r["line"], r["reason"]) for r in self.reject_rows()]

    def records_read(self) -> int:
        return sum(r.records_read for r in self.results)


def read_all(directory: Path, schema: pa.Schema) -> pa.Table:
    """Every Parquet file of a directory as one table (empty if there are none)."""
    files = sorted(directory.glob("*.parquet")) if directory.exists() else []
    return pa.concat_tables([schema.empty_table()] + [pq.read_table(p) for p in files])


def ingest(
    root: Path,
    paths: list[Path | str],
    options: IngestOptions | None = None,
    corpus: str = CORPUS,
    unique_ids: bool = True,
) -> Ingested:
    """Ingest every planned chunk of `paths` into the workspace at `root`; check the books."""
    options = options or IngestOptions()
    chunks = plan_chunks([str(p) for p in paths], options)
    results = [ingest_chunk(str(root), corpus, chunk, options) for chunk in chunks]
    ws = Workspace(root)
    corpus_dir, rejects_dir = ws.corpus_dir(corpus), ws.rejects_dir(corpus)
    shard_files = sorted(corpus_dir.glob("*.parquet")) if corpus_dir.exists() else []
    reject_files = sorted(rejects_dir.glob("*.parquet")) if rejects_dir.exists() else []
    # Every file on disk is one the results report, and nothing temporary is left behind.
    assert {ws.relative(p) for p in shard_files} == {s.path for r in results for s in r.shards}
    assert {ws.relative(p) for p in reject_files} == {
        r.rejects_path for r in results if r.rejects_path
    }
    for directory in (corpus_dir, rejects_dir):
        if directory.exists():
            assert not [p.name for p in directory.iterdir() if ".tmp-" in p.name]
    docs = pa.concat_tables(
        [DOCUMENT_SCHEMA.empty_table()] + [pq.read_table(p) for p in shard_files]
    )
    rejects = pa.concat_tables(
        [REJECT_SCHEMA.empty_table()] + [pq.read_table(p) for p in reject_files]
    )
    assert docs.schema == DOCUMENT_SCHEMA
    assert rejects.schema == REJECT_SCHEMA
    for result in results:
        assert result.records_read == result.documents + result.rejected + result.skipped, result
        assert sum(s.rows for s in result.shards) == result.documents
        assert sum(result.reject_counts.values()) == result.rejected
    assert docs.num_rows == sum(r.documents for r in results)
    assert rejects.num_rows == sum(r.rejected for r in results)
    # n_bytes is the UTF-8 size of the text; doc_ids never repeat.
    for row in docs.to_pylist():
        assert row["n_bytes"] == len(row["text"].encode("utf-8"))
    # Every reject keeps the bytes of what it rejects (a truncated stream may have cut nothing).
    for row in rejects.to_pylist():
        assert row["raw"] is not None, row
        assert row["raw"] or row["reason"] == "truncated", row
    reject_counts = Counter(rejects["reason"].to_pylist())
    assert reject_counts == sum((Counter(r.reject_counts) for r in results), Counter())
    if unique_ids:
        ids = docs["doc_id"].to_pylist()
        assert len(ids) == len(set(ids))
    return Ingested(results, docs, rejects)


def ingest_catalogued(
    root: Path, paths: list[Path | str], corpus: str = CORPUS, options: IngestOptions | None = None
) -> Workspace:
    """Ingest into a catalogued corpus with the library pipeline (no Prefect)."""
    ws = Workspace(root)
    pipeline.ingest(ws, [str(p) for p in paths], corpus, options)
    return ws
