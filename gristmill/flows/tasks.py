"""Prefect flows: ingest, curate (score -> select), materialize.

Each flow holds the workspace's write lock, fans work out as one task per chunk or shard, and
records results in the catalog from the flow process as each task finishes. The workspace's
catalog is the cache: finished chunks and stored signals are skipped on the next run.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from gristmill import progress
from gristmill.errors import GristmillError, InputError
from gristmill.selectors import registry
from gristmill.selectors.base import Scorer, SelectorContext, SetSelector
from gristmill.selectors.budget import Budget
from gristmill.selectors.scoring import (
    ScoringPlan,
    SignalInfo,
    build_selection,
    plan_scoring,
    record_scores,
    score_set,
    score_shard,
    token_plan,
)
from gristmill.selectors.selection import SelectOptions
from gristmill.storage import catalog, exporters, queries
from gristmill.storage.catalog import ChunkResult
from gristmill.storage.ingest import ingest_chunk
from gristmill.storage.readers import Chunk, IngestOptions, plan_chunks
from gristmill.storage.workspace import Workspace, validate_name

RUNNERS = ("threads", "processes")


def _retry_on_io(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient I/O failures only; bad data is rejected, not retried."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False


def task_runner(runner: str = "threads", workers: int | None = None) -> Any:
    """The Prefect task runner for a runner name; one worker per CPU unless told otherwise.

    Prefect's own default thread pool is unbounded, which runs every chunk at once: more
    memory and no more speed.
    """
    workers = workers or os.cpu_count() or 1
    if runner == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    if runner == "processes":
        return ProcessPoolTaskRunner(max_workers=workers)
    raise InputError(f"unknown runner {runner!r} (use one of {', '.join(RUNNERS)})")


def _worker_task(name: str) -> Any:
    """A per-chunk or per-shard task: retried on I/O errors; the catalog is its cache."""
    return task(
        name=name,
        retries=2,
        retry_delay_seconds=[1, 5],
        retry_condition_fn=_retry_on_io,
        cache_policy=NO_CACHE,
    )


@_worker_task("ingest-chunk")
def ingest_chunk_task(root: str, corpus: str, chunk: Chunk, options: IngestOptions) -> ChunkResult:
    """Read one chunk into shards and rejects."""
    return ingest_chunk(root, corpus, chunk, options)


@_worker_task("score-shard")
def score_shard_task(
    root: str, corpus: str, shard: dict, scorer: Scorer, config_hash: str
) -> SignalInfo:
    """Score one shard into the signal store."""
    return score_shard(root, corpus, shard, scorer, config_hash)


@flow(name="ingest", task_runner=task_runner())
def ingest_flow(
    workspace: str, paths: list[str], corpus: str, options: IngestOptions | None = None
) -> dict[str, Any]:
    """Ingest raw files into a corpus: a task per chunk, resumable, nothing lost."""
    options = options or IngestOptions()
    validate_name("corpus", corpus)
    ws = Workspace(workspace)
    with ws.write_lock(f"ingest {corpus}"):
        chunks = plan_chunks(paths, options)
        options_hash = options.options_hash()
        sources = {c.source: (c.fingerprint, options_hash) for c in chunks}
        with ws.catalog() as con:
            catalog.check_sources(con, corpus, sources)
            done = catalog.done_chunks(con, corpus)
        todo = [c for c in chunks if c.key(corpus, options_hash) not in done]
        bar = progress.track(f"ingest {corpus}", len(todo))
        futures = [ingest_chunk_task.submit(str(ws.root), corpus, c, options) for c in todo]
        added = {"records_read": 0, "documents": 0, "rejected": 0}
        for future in as_completed(futures):
            result: ChunkResult = future.result()
            with ws.catalog() as con:
                catalog.record_chunk(con, corpus, result)
            for key in added:
                added[key] += getattr(result, key)
            bar.advance()
        bar.close()
        if todo:  # a corpus only changes when chunks were added
            _check_unique_ids(ws, corpus)
    stats = queries.corpus_stats(ws, corpus)
    return {
        "corpus": corpus,
        "chunks": len(chunks),
        "chunks_skipped": len(chunks) - len(todo),
        "added": added,
        "stats": stats,
    }


def _check_unique_ids(ws: Workspace, corpus: str) -> None:
    duplicates = queries.repeated_doc_ids(ws, corpus)
    if duplicates:
        raise GristmillError(
            f"corpus {corpus!r} has {duplicates} repeated doc_id values (a 64-bit hash "
            "collision); report this with the input that caused it"
        )


def _score(ws: Workspace, plan: ScoringPlan, scorer: Scorer, label: str) -> int:
    """Score the shards a plan lists as missing; returns how many were scored."""
    bar = progress.track(label, len(plan.todo))
    futures = [
        score_shard_task.submit(str(ws.root), plan.corpus, shard, scorer, plan.config_hash)
        for shard in plan.todo
    ]
    infos = []
    for future in as_completed(futures):
        info = future.result()
        record_scores(ws, plan, [info], scorer.config_dict())
        plan.stored[info.shard_hash] = info.path
        infos.append(info)
        bar.advance()
    bar.close()
    return len(infos)


@flow(name="curate", task_runner=task_runner())
def curate_flow(
    workspace: str,
    corpus: str,
    selector: str,
    params: dict[str, Any] | None = None,
    budget: str | None = None,
    name: str | None = None,
    target: str | None = None,
    input_selection: str | None = None,
    options: SelectOptions | None = None,
    score_only: bool = False,
    recipe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every shard of a corpus with a selector (cached), then select under a budget."""
    options = options or SelectOptions()
    chosen = registry.get(selector).from_params(params or {})
    parsed_budget = Budget.parse(budget) if budget is not None else None
    if not score_only and name is None:
        raise InputError("a selection needs a name (--name)")
    ws = Workspace(workspace)
    with ws.write_lock(f"select {name or selector} from {corpus}"):
        target_version = None
        if target is not None:
            with ws.catalog(read_only=True) as con:
                catalog.require_corpus(con, target)
                target_version = catalog.corpus_version(con, target)
        elif chosen.requires_target:
            raise InputError(f"selector {selector!r} needs a target corpus (--target)")
        context = SelectorContext(
            ws, corpus, target, options.seed, target_version, parsed_budget, options.tokenizer
        )
        chosen.prepare(context)
        plan = plan_scoring(ws, corpus, chosen, context)
        reused = len(plan.stored)
        scored = _score(ws, plan, chosen, f"score {corpus} with {selector}")
        # Token counts first: a set selector's greedy may stop at a token budget.
        counter, size_plan = token_plan(ws, corpus, parsed_budget, options)
        if counter is not None and size_plan is not None:
            _score(ws, size_plan, counter, f"count tokens in {corpus}")
        if isinstance(chosen, SetSelector):
            plan = score_set(ws, plan, chosen, context, parent=input_selection)
        result: dict[str, Any] = {
            "corpus": corpus,
            "selector": selector,
            "signal": plan.signal,
            "config_hash": plan.config_hash,
            "shards_scored": scored,
            "shards_reused": reused,
        }
        if score_only:
            return result
        assert name is not None
        record = build_selection(
            ws, name, corpus, chosen, plan, parsed_budget, options,
            parent=input_selection, size_plan=size_plan, recipe=recipe,
        )  # fmt: skip
    _publish_selection(record)
    return {**result, "selection": record}


def _publish_selection(record: dict[str, Any]) -> None:
    """A table artifact per selection for the Prefect UI: kept and dropped per domain."""
    table = [
        {k: d[k] for k in ("domain", "candidates", "kept", "dropped", "kept_bytes")}
        for d in record["summary"]["domains"]
    ]
    reasons = ", ".join(f"{r} ({n})" for r, n in record["summary"].get("top_reasons", []))
    key = "selection-" + "".join(c if c.isalnum() else "-" for c in record["name"].lower())
    create_table_artifact(
        key=key[:100],
        table=table,
        description=(
            f"Selection {record['name']}: {record['n_selected']} of {record['n_candidates']} "
            f"documents from {record['corpus']} by {record['selector']} "
            f"(budget {record['budget'] or 'none'}). Top reasons for dropping: {reasons or 'n/a'}"
        ),
    )


@flow(name="materialize")
def materialize_flow(
    workspace: str, selection: str, out: str, fmt: str = "parquet", overwrite: bool = False
) -> dict[str, Any]:
    """Write a selection's documents to a directory."""
    return exporters.materialize(Workspace(workspace), selection, out, fmt, overwrite)  # type: ignore[arg-type]
