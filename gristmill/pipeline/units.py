"""Work units: one chunk to ingest, one shard to score. Plain picklable records, so any work map
(threads, processes, Ray, Dask) can ship them; their fields are the worker's arguments.

A unit function is registered with `work_unit` (its task's name, the record it returns and how a
group of its units is named), so an executor (the flows' Prefect map) can run any kind of unit
without knowing it: a new kind of per-shard work is one decorated function next to its logic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import PurePath
from typing import Any, TypeVar

from gristmill.selectors.base import Scorer
from gristmill.selectors.scoring import SignalInfo, score_shard
from gristmill.storage.catalog import ChunkResult
from gristmill.storage.ingest import ingest_chunk
from gristmill.storage.readers import Chunk, IngestOptions
from gristmill.storage.workspace import Workspace

UnitFn = TypeVar("UnitFn", bound=Callable[[Any], Any])


@dataclass(frozen=True)
class UnitKind:
    """What an executor needs to know about a unit function to run its units as tasks."""

    task_name: str  # the task's name in the UI and in logs: `score-shard`
    result_type: type  # the plain record the function returns; cached as JSON per unit
    group_title: Callable[[list[Any]], str]  # a group of units for a person: `score shards 1-8`


UNIT_KINDS: dict[Callable[[Any], Any], UnitKind] = {}


def work_unit(
    task_name: str, result_type: type, group_title: Callable[[list[Any]], str]
) -> Callable[[UnitFn], UnitFn]:
    """Register a unit function (one unit in, one `result_type` record out) as a kind of work."""

    def register(fn: UnitFn) -> UnitFn:
        UNIT_KINDS[fn] = UnitKind(task_name, result_type, group_title)
        return fn

    return register


def result_types() -> dict[str, type]:
    """The records a unit may return, by class name: all a cached unit result may decode to."""
    return {kind.result_type.__name__: kind.result_type for kind in UNIT_KINDS.values()}


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


def _ingest_title(group: list[ChunkUnit]) -> str:
    """`ingest part-003.jsonl`, `ingest a.jsonl .. c.jsonl (3 chunks)`."""
    if len(group) == 1:
        return f"ingest {group[0].title()}"
    return f"ingest {group[0].title()} .. {group[-1].title()} ({len(group)} chunks)"


@work_unit("ingest-chunk", ChunkResult, _ingest_title)
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


def _score_title(group: list[ShardUnit]) -> str:
    """`score shard 00012 of imdb`, `score shards 00012-00019 of imdb`."""
    first, last = group[0], group[-1]
    if len(group) == 1:
        return f"score shard {first.number:05d} of {first.corpus}"
    return f"score shards {first.number:05d}-{last.number:05d} of {first.corpus}"


@work_unit("score-shard", SignalInfo, _score_title)
def score_unit(unit: ShardUnit) -> SignalInfo:
    """Score one shard (the worker side of scoring)."""
    return score_shard(unit.root, unit.corpus, unit.shard, unit.scorer, unit.config_hash)
