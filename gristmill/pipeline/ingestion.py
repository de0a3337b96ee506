"""Ingest raw files into a corpus: plan chunks, skip finished ones, run the rest, record them."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from gristmill import progress
from gristmill.errors import GristmillError
from gristmill.pipeline.map import WorkMap, batched_by_time, serial_map
from gristmill.pipeline.units import ChunkUnit, ingest_unit
from gristmill.storage import catalog, queries
from gristmill.storage.readers import IngestOptions, plan_chunks
from gristmill.storage.workspace import Workspace, validate_name

COUNTS = ("records_read", "documents", "rejected")


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
            catalog.check_sources(con, corpus, sources)
            done = catalog.done_chunks(con, corpus)
        todo = [c for c in chunks if c.key(corpus, options_hash) not in done]
        bar = progress.track(f"ingest {corpus}", len(todo))
        units = [ChunkUnit(str(ws.root), corpus, c, options) for c in todo]
        added = dict.fromkeys(COUNTS, 0)
        for batch in batched_by_time(work_map(ingest_unit, units)):
            with ws.catalog() as con:
                for result in batch:
                    catalog.record_chunk(con, corpus, result)
            for result in batch:
                for key in added:
                    added[key] += getattr(result, key)
            bar.advance(len(batch))
        bar.close()
        if todo:  # a corpus only changes when chunks were added
            _check_unique_ids(ws, corpus)
    stats = queries.corpus_stats(ws, corpus)
    return IngestReport(corpus, len(chunks), len(chunks) - len(todo), added, stats, skipped)


def _check_unique_ids(ws: Workspace, corpus: str) -> None:
    duplicates = queries.repeated_doc_ids(ws, corpus)
    if duplicates:
        raise GristmillError(
            f"corpus {corpus!r} has {duplicates} repeated doc_id values (a 64-bit hash "
            "collision); report this with the input that caused it"
        )
