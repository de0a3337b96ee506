"""Ingest raw files into a corpus: plan chunks, skip finished ones, run the rest, record them."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import orjson

from gristmill import progress
from gristmill.errors import GristmillError, InputError
from gristmill.pipeline.map import WorkMap, batched_by_time, serial_map
from gristmill.pipeline.units import ChunkUnit, ingest_unit
from gristmill.storage import catalog, queries
from gristmill.storage.drop import drop_corpus
from gristmill.storage.readers import Chunk, IngestOptions, Reject, plan_chunks, read_chunk
from gristmill.storage.readers.stream import line_end_after
from gristmill.storage.workspace import Workspace, validate_name

COUNTS = ("records_read", "documents", "rejected", "skipped")
# Rejects whose record is there but not where the options look: the fields found are named.
_FIELD_REASONS = ("missing_text", "non_string_text")


@dataclass
class IngestReport:
    """What an ingest did: chunks planned and skipped, records added, the corpus afterwards."""

    corpus: str
    chunks: int
    chunks_skipped: int
    added: dict[str, int]
    stats: dict[str, Any]
    skipped_inputs: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The ingest flow's result (the keys the CLI and the recipe flow read)."""
        return dataclasses.asdict(self)


def as_workspace(workspace: Workspace | str | os.PathLike[str]) -> Workspace:
    """A Workspace for a Workspace or a directory."""
    return workspace if isinstance(workspace, Workspace) else Workspace(workspace)


def ingest(
    workspace: Workspace | str | os.PathLike[str],
    paths: list[str],
    corpus: str,
    options: IngestOptions | None = None,
    *,
    work_map: WorkMap = serial_map,
) -> IngestReport:
    """Ingest raw files into a corpus, a unit per chunk: resumable, nothing lost."""
    report = _ingest(workspace, paths, corpus, options, work_map, done_only=False)
    assert report is not None
    return report


def ingest_if_done(
    workspace: Workspace | str | os.PathLike[str],
    paths: list[str],
    corpus: str,
    options: IngestOptions | None = None,
) -> IngestReport | None:
    """The report of an ingest with every chunk already done, or None (nothing is changed:
    run `ingest`). A recipe run skips an up-to-date step's sub-flow with it."""
    ws = as_workspace(workspace)
    if not ws.exists():  # a session would create the catalog: a new workspace has work to do
        return None
    with ws.write_lock(f"ingest {corpus}"), ws.catalog_session():  # the lock first
        return _ingest(ws, paths, corpus, options, serial_map, done_only=True)


def _ingest(
    workspace: Workspace | str | os.PathLike[str],
    paths: list[str],
    corpus: str,
    options: IngestOptions | None,
    work_map: WorkMap,
    done_only: bool,
) -> IngestReport | None:
    options = options or IngestOptions()
    validate_name("corpus", corpus)
    ws = as_workspace(workspace)
    with ws.write_lock(f"ingest {corpus}"):
        with ws.catalog() as con:  # before planning, which reads every input
            catalog.check_corpus_name(con, corpus)
        skipped: list[dict[str, str]] = []  # directory entries left out, named with why
        chunks = plan_chunks(paths, options, skipped=skipped)
        options_hash = options.options_hash()
        sources = {c.source: (c.fingerprint, options_hash) for c in chunks}
        with ws.catalog() as con:
            new_corpus = corpus not in catalog.corpus_names(con)
            done = catalog.done_chunks(con, corpus)
        todo = [c for c in chunks if c.key(corpus, options_hash) not in done]
        if done_only and (todo or new_corpus):
            return None
        if todo:  # before the corpus or its sources are recorded
            check_first_records(todo[0], options)
        with ws.catalog() as con:
            catalog.check_sources(con, corpus, sources)
        bar = progress.track(f"ingest {corpus}", len(todo), unit="chunks")
        units = [ChunkUnit(str(ws.root), corpus, c, options) for c in todo]
        added = dict.fromkeys(COUNTS, 0)
        for batch in batched_by_time(progress.advancing(work_map(ingest_unit, units), bar)):
            with ws.catalog() as con:
                for result in batch:
                    catalog.record_chunk(con, corpus, result)
            for result in batch:
                for key in added:
                    added[key] += getattr(result, key)
        bar.close()
        if todo:  # a corpus only changes when chunks were added
            _check_unique_ids(ws, corpus)
        stats = queries.corpus_stats(ws, corpus)
        if new_corpus and stats["documents"] == 0:
            drop_corpus(ws, corpus, cascade=True)  # a new corpus has nothing that uses it
            raise InputError(_nothing_kept(corpus, stats))
    return IngestReport(corpus, len(chunks), len(chunks) - len(todo), added, stats, skipped)


def _nothing_kept(corpus: str, stats: dict[str, Any]) -> str:
    """Why a new corpus was not kept: every record read was rejected (or there were none)."""
    if not stats["records_read"]:
        return f"corpus {corpus!r}: the inputs hold no records; nothing was ingested"
    reasons = ", ".join(f"{k} {v:,}" for k, v in stats["rejects_by_reason"].items())
    return (
        f"corpus {corpus!r}: all {stats['records_read']:,} records read were rejected "
        f"({reasons}); the corpus was not kept"
    )


def _fields(rejects: list[Reject], limit: int = 100) -> list[str]:
    """The top-level fields of the rejected records (the first `limit`), in order of appearance."""
    found: dict[str, None] = {}
    for reject in rejects[:limit]:
        try:
            record = orjson.loads(reject.raw or b"")
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict):
            found.update(dict.fromkeys(record))
    return list(found)


_FIRST_RECORDS_BYTES = 1 << 20  # enough records to judge; a reader's first block is 16 MiB


def _first_mebibyte(chunk: Chunk) -> Chunk:
    """The chunk cut after the first line past its first MiB (line formats, uncompressed)."""
    if chunk.format not in ("jsonl", "csv", "txt"):
        return chunk
    end = line_end_after(chunk.path, chunk.start + _FIRST_RECORDS_BYTES)
    if end is None or (chunk.end is not None and end >= chunk.end):
        return chunk
    return dataclasses.replace(chunk, end=end)


def check_first_records(chunk: Chunk, options: IngestOptions) -> None:
    """InputError when every record of the chunk's first batch is rejected for one reason:
    options that do not fit the input (a wrong text field, a wrong format) would reject them
    all. A missing text field is named with the fields the records have."""
    if chunk.format == "warc":  # no field options to get wrong; a batch is 256 pages to extract
        return
    batches = read_chunk(_first_mebibyte(chunk), options)
    try:
        first = next((p for p in batches if p.records), None)
    finally:
        batches.close()
    if first is None or first.table.num_rows or not first.rejects:
        return
    reasons = {r.reason for r in first.rejects}
    if len(reasons) != 1:
        return
    reject = first.rejects[0]
    message = (
        f"{chunk.source}: all {first.records:,} records read first were rejected as "
        f"{reject.reason} (line {reject.line}: {reject.detail})"
    )
    fields = _fields(first.rejects) if reject.reason in _FIELD_REASONS else []
    if fields:
        message += (
            f"; the records have the fields {', '.join(fields)} "
            "(--text-field names the one with the text)"
        )
    raise InputError(message + "; nothing was ingested")


def _check_unique_ids(ws: Workspace, corpus: str) -> None:
    duplicates = queries.repeated_doc_ids(ws, corpus)
    if duplicates:
        raise GristmillError(
            f"corpus {corpus!r} has {duplicates} repeated doc_id values (a 64-bit hash "
            "collision); report this with the input that caused it"
        )
