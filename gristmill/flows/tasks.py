"""Prefect flows: ingest, curate (score -> select), materialize.

Each flow holds the workspace's write lock, fans work out as one task per chunk or shard, and
records results in the catalog from the flow process in batches (about every 2 s) as tasks
finish. Two caches work together: the catalog skips finished chunks and stored signals before
any task is made, and Prefect's task cache (task source + inputs, results as JSON under
`<workspace>/prefect-results`, see flows/results.py) serves a task that finished but was never
recorded, as when the flow process was killed.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prefect import Task, flow, task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.futures import as_completed
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from gristmill import progress
from gristmill.errors import GristmillError, InputError
from gristmill.flows.results import ResultJSONSerializer, with_results_in
from gristmill.flows.ui import progress_artifacts, publish_selection
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

RUNNERS = ("threads", "processes", "ray", "dask")
# The inputs name the data's version: a chunk carries its file's fingerprint, a shard its content
# hash, a signal its config hash, and `root` the workspace. The scorer object itself is left out:
# its settings are in the config hash, and pickling a loaded model to hash it would be slow.
WORKER_CACHE = TASK_SOURCE + INPUTS
SCORE_CACHE = WORKER_CACHE - "scorer"
RESULTS_DIR = "prefect-results"
RECORD_EVERY_S = 2.0


def _retry_on_io(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient I/O failures only; bad data is rejected, not retried."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False


def task_runner(
    runner: str = "threads", workers: int | None = None, address: str | None = None
) -> Any:
    """The Prefect task runner for a runner name; one worker per CPU unless told otherwise.

    Prefect's own default thread pool is unbounded, which runs every chunk at once: more
    memory and no more speed. `address` connects Ray or Dask to an existing cluster.
    """
    workers = workers or os.cpu_count() or 1
    if address is not None and runner not in ("ray", "dask"):
        raise InputError(f"--address needs --runner ray or dask, not {runner!r}")
    if runner == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    if runner == "processes":
        return ProcessPoolTaskRunner(max_workers=workers)
    if runner == "ray":
        _import_runner("prefect_ray", "RayTaskRunner", "ray")
        from gristmill.flows.ray_runner import LocalRayTaskRunner

        if address is not None:
            return LocalRayTaskRunner(address=address)
        # A Ray instance this process started (see `cluster`) is reused as it is.
        return LocalRayTaskRunner(init_kwargs={"num_cpus": workers})
    if runner == "dask":
        dask_runner = _import_runner("prefect_dask", "DaskTaskRunner", "dask")
        if address is not None:
            return dask_runner(address=address)
        return dask_runner(cluster_kwargs=_dask_cluster_kwargs(workers))
    raise InputError(f"unknown runner {runner!r} (use one of {', '.join(RUNNERS)})")


def _import_runner(module: str, name: str, extra: str) -> Any:
    try:
        return getattr(__import__(module), name)
    except ImportError:
        raise InputError(
            f"--runner {extra} needs the {extra} extra: pip install 'gristmill[{extra}]'"
        ) from None


def _dask_cluster_kwargs(workers: int) -> dict[str, Any]:
    # Worker processes, one thread each: scorers are CPU-bound Python and hold the GIL. The
    # scheduler and workers listen on loopback only.
    return {"n_workers": workers, "threads_per_worker": 1, "dashboard_address": None,
            "host": "127.0.0.1"}  # fmt: skip


@contextlib.contextmanager
def cluster(runner: str, workers: int | None, address: str | None) -> Iterator[str | None]:
    """One local Ray or Dask cluster for a whole recipe, so stages do not each start one.

    Yields the address the stages' task runners connect to (None: Ray already initialised in
    this process, or a runner that needs no cluster).
    """
    if address is not None or runner not in ("ray", "dask"):
        yield address
        return
    workers = workers or os.cpu_count() or 1
    if runner == "ray":
        _import_runner("prefect_ray", "RayTaskRunner", "ray")
        from gristmill.flows.ray_runner import ray, start_local_ray

        start_local_ray(num_cpus=workers)
        try:
            yield None
        finally:
            ray.shutdown()
        return
    _import_runner("prefect_dask", "DaskTaskRunner", "dask")
    from distributed import LocalCluster

    with LocalCluster(**_dask_cluster_kwargs(workers)) as local:
        yield local.scheduler_address


def result_storage(ws: Workspace) -> Path:
    """Prefect's task results and cache records for a workspace: they live and go with it."""
    return ws.root / RESULTS_DIR


def _worker_task(name: str, cache_policy: Any = WORKER_CACHE) -> Any:
    """A per-chunk or per-shard task: retried with back-off on I/O errors, cached by source
    and inputs."""
    return task(
        name=name,
        retries=3,
        retry_delay_seconds=[1, 4, 16],
        retry_jitter_factor=0.5,
        retry_condition_fn=_retry_on_io,
        cache_policy=cache_policy,
        persist_result=True,
        result_serializer=ResultJSONSerializer(),
    )


def run_each(
    worker: Task, ws: Workspace, calls: list[tuple], outputs_exist: Callable[[Any], bool]
) -> Iterator[Any]:
    """Submit `worker` once per argument tuple and yield results as they finish.

    A cached result whose files were deleted since is computed again rather than served stale.
    """
    bound = with_results_in(worker, result_storage(ws))
    futures = [bound.submit(*args) for args in calls]
    arguments = {id(future): args for future, args in zip(futures, calls, strict=True)}
    for future in as_completed(futures):
        result = future.result()
        if not outputs_exist(result):
            args = arguments[id(future)]
            result = bound.with_options(refresh_cache=True).submit(*args).result()
        yield result


def batched_by_time(results: Iterator[Any], seconds: float = RECORD_EVERY_S) -> Iterator[list]:
    """Group results so that the catalog is written about once per `seconds`.

    Opening and checkpointing DuckDB per result cost more than Prefect itself on a 100-shard
    run. A kill loses at most the batch not yet recorded, and the task cache serves it again.
    """
    batch: list = []
    since = time.monotonic()
    for result in results:
        batch.append(result)
        if time.monotonic() - since >= seconds:
            yield batch
            batch, since = [], time.monotonic()
    if batch:
        yield batch


@_worker_task("ingest-chunk")
def ingest_chunk_task(root: str, corpus: str, chunk: Chunk, options: IngestOptions) -> ChunkResult:
    """Read one chunk into shards and rejects."""
    return ingest_chunk(root, corpus, chunk, options)


@_worker_task("score-shard", SCORE_CACHE)
def score_shard_task(
    root: str, corpus: str, shard: dict, scorer: Scorer, config_hash: str
) -> SignalInfo:
    """Score one shard into the signal store."""
    return score_shard(root, corpus, shard, scorer, config_hash)


@flow(name="ingest", task_runner=task_runner(), persist_result=False)
def ingest_flow(
    workspace: str, paths: list[str], corpus: str, options: IngestOptions | None = None
) -> dict[str, Any]:
    """Ingest raw files into a corpus: a task per chunk, resumable, nothing lost."""
    options = options or IngestOptions()
    validate_name("corpus", corpus)
    ws = Workspace(workspace)
    with ws.write_lock(f"ingest {corpus}"), progress_artifacts():
        skipped: list[dict[str, str]] = []  # directory entries left out, named with why
        chunks = plan_chunks(paths, options, skipped=skipped)
        options_hash = options.options_hash()
        sources = {c.source: (c.fingerprint, options_hash) for c in chunks}
        with ws.catalog() as con:
            catalog.check_corpus_name(con, corpus)
            catalog.check_sources(con, corpus, sources)
            done = catalog.done_chunks(con, corpus)
        todo = [c for c in chunks if c.key(corpus, options_hash) not in done]
        bar = progress.track(f"ingest {corpus}", len(todo))
        calls = [(str(ws.root), corpus, c, options) for c in todo]
        added = {"records_read": 0, "documents": 0, "rejected": 0}
        results = run_each(ingest_chunk_task, ws, calls, lambda r: _chunk_files_exist(ws, r))
        for batch in batched_by_time(results):
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
    return {
        "corpus": corpus,
        "chunks": len(chunks),
        "chunks_skipped": len(chunks) - len(todo),
        "added": added,
        "stats": stats,
        "skipped_inputs": skipped,
    }


def _chunk_files_exist(ws: Workspace, result: ChunkResult) -> bool:
    paths = [s.path for s in result.shards] + [result.rejects_path] * bool(result.rejects_path)
    return all(ws.absolute(p).exists() for p in paths)


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
    calls = [(str(ws.root), plan.corpus, s, scorer, plan.config_hash) for s in plan.todo]
    scored = 0
    exists = lambda info: ws.absolute(info.path).exists()  # noqa: E731
    for batch in batched_by_time(run_each(score_shard_task, ws, calls, exists)):
        record_scores(ws, plan, batch, scorer.config_dict())
        plan.stored.update({info.shard_hash: info.path for info in batch})
        scored += len(batch)
        bar.advance(len(batch))
    bar.close()
    return scored


@flow(name="curate", task_runner=task_runner(), persist_result=False)
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
    with ws.write_lock(f"select {name or selector} from {corpus}"), progress_artifacts():
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
    publish_selection(record)
    return {**result, "selection": record}


@flow(name="materialize", persist_result=False)
def materialize_flow(
    workspace: str, selection: str, out: str, fmt: str = "parquet", overwrite: bool = False
) -> dict[str, Any]:
    """Write a selection's documents to a directory."""
    return exporters.materialize(Workspace(workspace), selection, out, fmt, overwrite)  # type: ignore[arg-type]
