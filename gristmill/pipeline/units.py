"""Work units: one chunk to ingest, one shard to score. Plain picklable records, so any work map
(threads, processes, Ray, Dask) can ship them; their fields are the worker's arguments."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import PurePath
from typing import Any

from gristmill.selectors.base import Scorer
from gristmill.selectors.scoring import SignalInfo, score_shard
from gristmill.storage.catalog import ChunkResult
from gristmill.storage.ingest import ingest_chunk
from gristmill.storage.readers import Chunk, IngestOptions
from gristmill.storage.workspace import Workspace


def unit_arguments(unit: Any) -> dict[str, Any]:
    """A unit's fields by name, not copied (a scorer may hold a loaded model)."""
    return {f.name: getattr(unit, f.name) for f in fields(unit)}


def chunk_outputs_exist(root: str, result: ChunkResult) -> bool:
    """True while every file a chunk result names (its shards and rejects) is still there."""
    paths = [s.path for s in result.shards] + [result.rejects_path] * bool(result.rejects_path)
    return all(Workspace(root).absolute(p).exists() for p in paths)


def _lines(first: int) -> str:
    return f"from line {first:,}"


@dataclass(frozen=True)
class ChunkUnit:
    """Read one chunk of a source file into a corpus's shards and rejects."""

    root: str
    corpus: str
    chunk: Chunk
    options: IngestOptions

    def outputs_exist(self, result: ChunkResult) -> bool:
        """True while every file the result names is still there."""
        return chunk_outputs_exist(self.root, result)

    def size_bytes(self) -> int | None:
        """About how many input bytes the chunk reads (None: unknown, as for a hub dataset)."""
        chunk = self.chunk
        if chunk.end is not None and chunk.format != "parquet":  # a byte range
            return chunk.end - chunk.start
        planned = chunk.fingerprint.split(":", 1)[0]  # "<file bytes>:..." for local files
        return int(planned) if planned.isdigit() else None

    def title(self) -> str:
        """What the chunk is, for a person: `part-003.jsonl`, `train.jsonl from line 120,001`."""
        name = PurePath(self.chunk.source).name or self.chunk.source
        return f"{name} {_lines(self.chunk.first_line)}" if self.chunk.end is not None else name


def ingest_unit(unit: ChunkUnit) -> ChunkResult:
    """Ingest one chunk (the worker side of ingest)."""
    return ingest_chunk(unit.root, unit.corpus, unit.chunk, unit.options)


@dataclass(frozen=True)
class ShardUnit:
    """Score one shard of a corpus into the signal store under a config hash."""

    root: str
    corpus: str
    shard: dict
    scorer: Scorer
    config_hash: str
    number: int = 0  # the shard's place in its corpus, for names only (not a worker argument)

    def outputs_exist(self, result: SignalInfo) -> bool:
        """True while the signal file the result names is still there."""
        return Workspace(self.root).absolute(result.path).exists()

    def size_bytes(self) -> int | None:
        """The shard's text bytes: what a scorer reads."""
        return int(self.shard["text_bytes"])


def score_unit(unit: ShardUnit) -> SignalInfo:
    """Score one shard (the worker side of scoring)."""
    return score_shard(unit.root, unit.corpus, unit.shard, unit.scorer, unit.config_hash)
