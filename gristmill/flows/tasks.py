"""Prefect flows: ingest, curate (score -> select), materialize.

Each flow calls the library step (gristmill.pipeline), which holds the workspace's write lock
and records results in the catalog from the flow process in batches (about every 2 s) as units
finish; the flow's work map runs each unit as a Prefect task, one per chunk or shard. Two
caches work together: the catalog skips finished chunks and stored signals before any task is
made, and Prefect's task cache (task source + inputs, results as JSON under
`<workspace>/prefect-results`, see flows/results.py) serves a task that finished but was never
recorded, as when the flow process was killed.
"""

# No `from __future__ import annotations`: a served flow is pickled by value, and string
# annotations naming types the body never uses (IngestOptions, SelectOptions) would not resolve.
import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from prefect import Task, flow, task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.futures import as_completed
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from gristmill import pipeline
from gristmill.errors import InputError
from gristmill.flows.results import ResultJSONSerializer, with_results_in
from gristmill.flows.ui import progress_artifacts, publish_selection
from gristmill.pipeline.units import ingest_unit, score_unit, unit_arguments
from gristmill.selectors.base import Scorer
from gristmill.selectors.scoring import SignalInfo, score_shard
from gristmill.selectors.selection import SelectOptions
from gristmill.storage.catalog import ChunkResult
from gristmill.storage.ingest import ingest_chunk
from gristmill.storage.readers import Chunk, IngestOptions
from gristmill.storage.workspace import Workspace

RUNNERS = ("threads", "processes", "ray", "dask")
# The inputs name the data's version: a chunk carries its file's fingerprint, a shard its content
# hash, a signal its config hash, and `root` the workspace. The scorer object itself is left out:
# its settings are in the config hash, and pickling a loaded model to hash it would be slow.
WORKER_CACHE = TASK_SOURCE + INPUTS
SCORE_CACHE = WORKER_CACHE - "scorer"
RESULTS_DIR = "prefect-results"


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


class PrefectMap:
    """A work map that runs each ingest or scoring unit as a Prefect task of its kind.

    Results come back as they finish; a cached result whose files were deleted since is
    computed again rather than served stale.
    """

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws

    def __call__(self, fn: Callable[[Any], Any], units: Sequence[Any]) -> Iterator[Any]:
        """Submit `fn`'s task once per unit and yield the results in completion order."""
        worker = _UNIT_TASKS.get(fn)
        if worker is None:
            raise TypeError(f"no Prefect task runs {fn.__qualname__} units")
        bound = with_results_in(worker, result_storage(self.ws))
        futures = [bound.submit(**unit_arguments(unit)) for unit in units]
        unit_of = {id(future): unit for future, unit in zip(futures, units, strict=True)}
        for future in as_completed(futures):
            result = future.result()
            unit = unit_of[id(future)]
            if not unit.outputs_exist(result):
                result = bound.with_options(refresh_cache=True).submit(**unit_arguments(unit))
                result = result.result()
            yield result


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


# The task functions keep the units' fields as their parameters, so that Prefect's cache key
# (task source + inputs) names the function and the data version as it always has.
_UNIT_TASKS: dict[Callable[[Any], Any], Task] = {
    ingest_unit: ingest_chunk_task,
    score_unit: score_shard_task,
}


@flow(name="ingest", task_runner=task_runner(), persist_result=False)
def ingest_flow(
    workspace: str, paths: list[str], corpus: str, options: IngestOptions | None = None
) -> dict[str, Any]:
    """Ingest raw files into a corpus: a task per chunk, resumable, nothing lost."""
    ws = Workspace(workspace)
    with progress_artifacts():
        report = pipeline.ingest(ws, paths, corpus, options, work_map=PrefectMap(ws))
    return report.as_dict()


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
    if not score_only and name is None:
        raise InputError("a selection needs a name (--name)")
    ws = Workspace(workspace)
    with progress_artifacts():
        curation = pipeline.curate(
            ws, corpus, selector, params=params, budget=budget,
            name=None if score_only else name, target=target, parent=input_selection,
            options=options, recipe=recipe, work_map=PrefectMap(ws),
        )  # fmt: skip
    if curation.record is not None:
        publish_selection(curation.record)
    return curation.as_dict()


@flow(name="materialize", persist_result=False)
def materialize_flow(
    workspace: str, selection: str, out: str, fmt: str = "parquet", overwrite: bool = False
) -> dict[str, Any]:
    """Write a selection's documents to a directory."""
    return pipeline.materialize(Workspace(workspace), selection, out, fmt, overwrite)  # type: ignore[arg-type]
