"""Prefect flows: ingest, curate (score -> select), materialize.

Each flow calls the library step (gristmill.pipeline), which holds the workspace's write lock
and records results in the catalog from the flow process in batches (about every 2 s) as units
finish; the flow's work map runs the units as Prefect tasks, small chunks and shards grouped
into one task of enough work (Prefect records every task run: at one task per 350 KB shard,
that cost as much as the work). Two caches work together, both per unit: the catalog skips
finished chunks and stored signals before any task is made, and each unit's result (keyed by
its function's source and its inputs, JSON under `<workspace>/prefect-results/units`, see
flows/results.py) serves a unit that finished but was never recorded, as when the flow
process was killed.
"""

# No `from __future__ import annotations`: a served flow is pickled by value, and string
# annotations naming types the body never uses (IngestOptions, SelectOptions) would not resolve.
import contextlib
import functools
import inspect
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from prefect import Task, flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
from prefect.utilities.hashing import hash_objects

from gristmill import pipeline
from gristmill.errors import InputError
from gristmill.flows.heartbeats import stop_joining_heartbeats
from gristmill.flows.results import ResultJSONSerializer, UnitResults
from gristmill.flows.ui import progress_artifacts, publish_selection
from gristmill.pipeline.checks import check_runner
from gristmill.pipeline.map import plan_groups
from gristmill.pipeline.units import UNIT_KINDS, unit_arguments
from gristmill.selectors.selection import SelectOptions
from gristmill.storage.readers import IngestOptions
from gristmill.storage.token_shards import TokenizeOptions
from gristmill.storage.workspace import Workspace

stop_joining_heartbeats()  # every flow module imports this one

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
    check_runner(runner, address)
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
    raise AssertionError(runner)  # check_runner knows every runner


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
    """One local Ray or Dask cluster for a whole recipe, so stages do not each start one; on
    a Ray cluster given by address, one connection for the whole recipe.

    Yields the address the stages' task runners connect to (None: Ray initialised in this
    process, which they reuse, or a runner that needs no cluster).
    """
    workers = workers or os.cpu_count() or 1
    if runner == "ray":
        _import_runner("prefect_ray", "RayTaskRunner", "ray")
        from gristmill.flows.ray_runner import join_ray, ray, start_local_ray

        if ray.is_initialized():  # the caller's own Ray (a notebook, a test): theirs to stop
            yield None
            return
        # A stage that connected itself would end its Ray job when it finished, and the
        # cluster would stop that job's worker processes: every stage would pay for new
        # workers importing gristmill (about 8 s each on 2 cores).
        if address is None:
            start_local_ray(num_cpus=workers)
        else:
            join_ray(address)
        try:
            yield None
        finally:
            ray.shutdown()
        return
    if address is not None or runner != "dask":
        yield address
        return
    _import_runner("prefect_dask", "DaskTaskRunner", "dask")
    from distributed import LocalCluster

    with LocalCluster(**_dask_cluster_kwargs(workers)) as local:
        yield local.scheduler_address


def result_storage(ws: Workspace) -> Path:
    """The worker tasks' per-unit results for a workspace: they live and go with it."""
    return ws.root / RESULTS_DIR


def _worker_task(name: str) -> Any:
    """A task that runs a group of units: retried with back-off on I/O errors, each unit's
    result cached on its own (see `_run_units`), the run named by its `title`."""
    return task(
        name=name,
        task_run_name="{title}",
        retries=3,
        retry_delay_seconds=[1, 4, 16],
        retry_jitter_factor=0.5,
        retry_condition_fn=_retry_on_io,
        cache_policy=NO_CACHE,
        persist_result=False,
        result_serializer=ResultJSONSerializer(),  # the only result type, were one persisted
    )


@functools.cache
def _source(fn: Callable[[Any], Any]) -> str:
    return inspect.getsource(fn)


def unit_key(fn: Callable[[Any], Any], unit: Any) -> str:
    """A unit's cache key: the unit function's source and the unit's data version.

    A chunk carries its file's fingerprint, a shard its content hash, a signal its config
    hash, and `root` the workspace. The scorer itself is left out (its settings are in the
    config hash, and hashing a loaded model would be slow), and so is the shard's number.
    """
    # The scorer and the transforms are in the config hash; the number only names the shard.
    unhashed = ("scorer", "transforms", "number")
    inputs = {k: v for k, v in unit_arguments(unit).items() if k not in unhashed}
    return hash_objects(_source(fn), inputs, raise_on_failure=True)  # type: ignore[return-value]


def _run_units(
    fn: Callable[[Any], Any], units: list[Any], results_dir: str, serializer: Any
) -> list[Any]:
    """Run a group's units in order, each served from its own cached result when that is
    there and its files still are (a finished unit of a killed run is not done again)."""
    store = UnitResults(Path(results_dir), serializer)
    results = []
    for unit in units:
        key = unit_key(fn, unit)
        result = store.read(key)
        if result is None or not unit.outputs_exist(result):
            result = fn(unit)
            store.write(key, result)
        results.append(result)
    return results


def _unit_group_task(fn: Callable[[Any], Any]) -> Task:
    """The task that runs a group of `fn`'s units, named after its kind (`score-shard`).

    Built once per kind from the kind's registration (`pipeline.units.work_unit`); its function
    is named `<kind>_task` so that its task key says what it runs (`score_shard_task-...`).
    """
    kind = UNIT_KINDS[fn]

    def run_group(units: list[Any], results_dir: str, title: str) -> list[Any]:
        return _run_units(fn, units, results_dir, ResultJSONSerializer())

    run_group.__name__ = run_group.__qualname__ = kind.task_name.replace("-", "_") + "_task"
    run_group.__doc__ = f"Run a group of {fn.__name__} units, each cached on its own."
    return _worker_task(kind.task_name)(run_group)


_UNIT_TASKS: dict[Callable[[Any], Any], Task] = {}


def unit_task(fn: Callable[[Any], Any]) -> Task:
    """The Prefect task for a registered unit function (made on first use)."""
    if fn not in _UNIT_TASKS:
        if fn not in UNIT_KINDS:
            raise TypeError(f"no Prefect task runs {fn.__qualname__} units (not a work_unit)")
        _UNIT_TASKS[fn] = _unit_group_task(fn)
    return _UNIT_TASKS[fn]


def _workers() -> int:
    """The current flow's task runner's worker count (threads or processes), else the CPUs."""
    context = FlowRunContext.get()
    workers = getattr(context.task_runner, "_max_workers", None) if context else None
    if isinstance(workers, int) and 0 < workers < 1 << 16:
        return workers
    return os.cpu_count() or 1


class PrefectMap:
    """A work map that runs ingest or scoring units as Prefect tasks, a group of units per task.

    Small units are grouped (`plan_groups`, by bytes) so that Prefect's cost per task run stays
    a small share of the work; each unit is still cached, and recorded in the catalog, on its
    own. Results come back, unit by unit, as their groups finish.
    """

    def __init__(self, ws: Workspace, workers: int | None = None) -> None:
        self.ws = ws
        self.workers = workers

    def __call__(self, fn: Callable[[Any], Any], units: Sequence[Any]) -> Iterator[Any]:
        """Submit `fn`'s task once per group of units and yield the units' results."""
        worker = unit_task(fn)
        workers = self.workers or _workers()
        groups = plan_groups([unit.size_bytes() for unit in units], workers)
        results_dir = str(result_storage(self.ws) / "units")
        futures = []
        for indexes in groups:
            group = [units[i] for i in indexes]
            title = UNIT_KINDS[fn].group_title(group)
            futures.append(worker.submit(units=group, results_dir=results_dir, title=title))
        for future in as_completed(futures):
            yield from future.result()


def _curate_run_name() -> str:
    """`curate imdb-clean (quality)`, or `score imdb (quality)` when only scoring."""
    parameters = flow_run.parameters
    if parameters.get("score_only") or parameters.get("name") is None:
        return f"score {parameters['corpus']} ({parameters['selector']})"
    return f"curate {parameters['name']} ({parameters['selector']})"


@flow(
    name="ingest", flow_run_name="ingest {corpus}", task_runner=task_runner(),
    persist_result=False,
)  # fmt: skip
def ingest_flow(
    workspace: str, paths: list[str], corpus: str, options: IngestOptions | None = None
) -> dict[str, Any]:
    """Ingest raw files into a corpus: a task per chunk, resumable, nothing lost."""
    ws = Workspace(workspace)
    with progress_artifacts():
        report = pipeline.ingest(ws, paths, corpus, options, work_map=PrefectMap(ws))
    return report.as_dict()


@flow(
    name="curate", flow_run_name=_curate_run_name, task_runner=task_runner(),
    persist_result=False,
)  # fmt: skip
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
    if curation.record is not None and not curation.record["unchanged"]:
        publish_selection(curation.record, ws)  # an unchanged one has its artifact already
    return curation.as_dict()


@flow(
    name="materialize", flow_run_name="materialize {selection} -> {out}",
    task_runner=task_runner(), persist_result=False,
)  # fmt: skip
def materialize_flow(
    workspace: str,
    selection: str,
    out: str,
    fmt: str = "parquet",
    overwrite: bool = False,
    tokens: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a selection's documents to a directory (`tokens`: the token settings of the
    tokens format, as plain data)."""
    options = TokenizeOptions(**tokens) if tokens else None
    ws = Workspace(workspace)
    # The tokens format tokenizes a task per shard on the runner, each shard cached on its own.
    return pipeline.materialize(ws, selection, out, fmt, overwrite, options, PrefectMap(ws))  # type: ignore[arg-type]


@flow(
    name="transform", flow_run_name="transform {corpus} into {name}", task_runner=task_runner(),
    persist_result=False,
)  # fmt: skip
def transform_flow(
    workspace: str,
    corpus: str,
    transforms: list[dict[str, Any]],
    name: str,
    recipe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Rewrite a corpus's text into a derived corpus: a task per group of shards, cached."""
    ws = Workspace(workspace)
    with progress_artifacts():
        report = pipeline.transform(ws, corpus, transforms, name, recipe=recipe,
                                    work_map=PrefectMap(ws))  # fmt: skip
    return report.as_dict()
