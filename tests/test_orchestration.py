"""Orchestration: the task cache, resume after SIGKILL, artifacts, schedules and runners."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import good_text, write_jsonl

from gristmill.flows import ingest_flow, run_recipe_flow
from gristmill.recipe import load_recipe
from gristmill.storage import Workspace, queries

pytestmark = pytest.mark.usefixtures("prefect_server")


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or ""


def _recipe(tmp_path: Path, files: int, docs: int, name: str = "nightly") -> Path:
    """A recipe over `files` JSONL files (one chunk and one shard each): quality, then a budget."""
    raw = tmp_path / "raw"
    for f in range(files):
        records = [
            {"text": good_text(f * docs + i) if i % 7 else "buy now " * 3, "site": f"s{i % 3}"}
            for i in range(docs)
        ]
        write_jsonl(raw / f"part-{f:03d}.jsonl", records)
    recipe = {
        "name": name,
        "ingest": [{"corpus": "web", "paths": [str(raw)], "domain_field": "site"}],
        "select": [
            {"name": "clean", "selector": "quality"},
            {"name": "sample", "selector": "quality", "mode": "gumbel", "budget": "50%"},
        ],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def _members(ws: Path, selection: str) -> list[tuple[int, int]]:
    table = pq.read_table(ws / "selections" / selection / "members.parquet")
    return list(zip(table["doc_id"].to_pylist(), table["rank"].to_pylist(), strict=True))


WORKER_TASKS = {"ingest_chunk_task": "ingest-chunk", "score_shard_task": "score-shard"}


def _file_versions(directory: Path) -> dict[Path, tuple[int, int]]:
    """Each Parquet file under `directory` and its (inode, mtime): a rewrite changes them."""
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in directory.rglob("*.parquet")}


def _task_states(flow_run_id: Any, expected: int | None = None) -> list[tuple[str, str]]:
    """(task name, state name) of every worker task under a flow run and its sub-flows.

    Task run states reach the API as events, a moment after the flow returns: wait for them.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
    )

    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:
            runs, frontier = [flow_run_id], [flow_run_id]
            while frontier:
                children = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=frontier)
                    )
                )
                frontier = [c.id for c in children]
                runs += frontier
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=runs)), limit=200
            )
            # A task run is named after its units; its task key starts with the function's name.
            states = [
                (WORKER_TASKS[t.task_key.split("-", 1)[0]], t.state.name if t.state else "")
                for t in tasks
                if t.task_key.split("-", 1)[0] in WORKER_TASKS
            ]
            final = all(s in ("Completed", "Cached") for _, s in states)
            if (final and (expected is None or len(states) >= expected)) or (
                time.monotonic() > deadline
            ):
                return states
            time.sleep(0.5)


def _count(states: list[tuple[str, str]], task: str, state: str) -> int:
    return sum(1 for name, s in states if name == task and s == state)


def test_task_cache_serves_unrecorded_results_but_never_stale_ones(tmp_path: Path) -> None:
    raw = write_jsonl(tmp_path / "a.jsonl", [{"text": good_text(i)} for i in range(30)])
    ws = tmp_path / "ws"

    def ingest() -> tuple[list[tuple[str, str]], int]:
        state = ingest_flow(str(ws), [str(raw)], "c", return_state=True)
        stats = queries.corpus_stats(Workspace(ws), "c")
        assert stats["reconciles"]
        return _task_states(state.state_details.flow_run_id, 1), stats["documents"]

    assert ingest() == ([("ingest-chunk", "Completed")], 30)
    shards = _file_versions(ws / "corpora")
    # A kill after the chunk finished but before the catalog recorded it: the chunk's cached
    # result (in the workspace) serves it, and its shard files are not written again.
    (ws / "catalog.duckdb").unlink()
    assert ingest() == ([("ingest-chunk", "Completed")], 30)
    assert _file_versions(ws / "corpora") == shards
    # The input changed: its fingerprint is an input of the unit, so the chunk is read again.
    (ws / "catalog.duckdb").unlink()
    write_jsonl(raw, [{"text": good_text(i)} for i in range(20)])
    assert ingest() == ([("ingest-chunk", "Completed")], 20)
    assert _file_versions(ws / "corpora") != shards
    # The cached result names shard files that were deleted since: recomputed, not served.
    (ws / "catalog.duckdb").unlink()
    for shard in (ws / "corpora" / "c").glob("*.parquet"):
        shard.unlink()
    states, documents = ingest()
    assert documents == 20 and ("ingest-chunk", "Completed") in states
    assert (ws / "prefect-results").is_dir()


@pytest.mark.slow
def test_run_killed_while_scoring_resumes_only_unfinished_shards(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, files=24, docs=40)
    ws = tmp_path / "ws"
    command = [sys.executable, "-m", "gristmill.cli", "run", str(recipe), "-w", str(ws),
               "--workers", "1"]  # fmt: skip
    env = {**os.environ, "PREFECT_API_URL": _api_url()}
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    signals = ws / "signals" / "web" / "quality"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(signals.glob("*/*.parquet"))) < 6:
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    with duckdb.connect(str(ws / "catalog.duckdb"), read_only=True) as con:
        chunks = con.execute("select count(*) from chunks").fetchall()[0][0]
        recorded = con.execute("select count(*) from signals").fetchall()[0][0]
    assert chunks == 24 and recorded < 24, recorded  # killed in the middle of scoring

    finished = _file_versions(signals)  # the shards scored before the kill
    state = run_recipe_flow(load_recipe(recipe), str(ws), "threads", 1, return_state=True)
    assert state.is_completed()
    states = _task_states(state.state_details.flow_run_id, 1)
    assert _count(states, "ingest-chunk", "Completed") == 0  # every chunk was recorded
    assert _count(states, "score-shard", "Completed") >= 1
    clean_step = state.result()["select"][0]
    # Only the shards the catalog had not recorded were planned, and those that had finished
    # before the kill (in a group that had not) came from their cached results or, killed
    # before the result was stored, from their complete files: none was rescored.
    assert clean_step["shards_scored"] == 24 - recorded, clean_step
    after = _file_versions(signals)
    assert len(after) == 24 and {p: after[p] for p in finished} == finished

    clean = tmp_path / "clean"
    run_recipe_flow(load_recipe(recipe), str(clean), "threads", 1)
    for selection in ("clean", "sample"):
        assert _members(ws, selection) == _members(clean, selection)


def test_a_re_run_gives_up_to_date_steps_no_sub_flow(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    recipe = _recipe(tmp_path, files=2, docs=30, name="again")
    ws = str(tmp_path / "ws")

    def run() -> tuple[dict, list[str]]:
        state = run_recipe_flow(load_recipe(recipe), ws, "threads", 1, return_state=True)
        with get_client(sync_client=True) as client:
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(
                        any_=[state.state_details.flow_run_id]
                    )
                )
            )
        return state.result(), sorted(c.name for c in children)

    first, stages = run()
    assert stages == ["curate clean (quality)", "curate sample (quality)", "ingest web"]
    again, stages = run()
    assert stages == []  # every step up to date: ~0.15 s of API calls each saved
    for key in ("ingest", "select"):
        assert len(again[key]) == len(first[key])
    assert [s["selection"]["unchanged"] for s in again["select"]] == [True, True]
    assert again["ingest"][0]["stats"] == first["ingest"][0]["stats"]
    # A changed input makes its step, and the steps that read its corpus, sub-flows again.
    write_jsonl(tmp_path / "raw" / "part-009.jsonl", [{"text": good_text(990), "site": "s0"}])
    _, stages = run()
    assert stages == ["curate clean (quality)", "curate sample (quality)", "ingest web"]


def test_artifacts_in_the_prefect_api(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    recipe = _recipe(tmp_path, files=2, docs=30, name="arts")
    ws = tmp_path / "ws"
    run_recipe_flow(load_recipe(recipe), str(ws), "threads", 1)
    keys = ["selection-clean", "selection-sample", "progress-ingest-web",
            "progress-score-web-with-quality"]  # fmt: skip
    with get_client(sync_client=True) as client:
        found = {
            a.key: a
            for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)), limit=100
            )
        }  # newest version last is not guaranteed; any version of each key will do
    assert set(found) == set(keys)
    sample = found["selection-sample"]
    assert sample.type == "table"
    rows = sample.data if isinstance(sample.data, list) else __import__("json").loads(sample.data)
    assert {r["domain"] for r in rows} == {"s0", "s1", "s2"}
    assert sum(r["kept"] for r in rows) + sum(r["dropped"] for r in rows) == sum(
        r["candidates"] for r in rows
    )
    assert "Budget 50%; used" in sample.description and "Top reasons" in sample.description
    assert found["progress-ingest-web"].type == "progress"
    assert found["progress-ingest-web"].data == 100.0


def _stop(process: subprocess.Popen) -> None:
    """Stop a process we started: SIGINT, then SIGKILL if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for(
    predicate: Any, what: str, process: subprocess.Popen, log: Path, timeout_s: float
) -> Any:
    """Poll `predicate` until it returns something true; fail if `process` exits first."""
    deadline = time.monotonic() + timeout_s
    while not (found := predicate()):
        assert process.poll() is None, f"exited {process.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s:\n{log.read_text()}"
        time.sleep(0.5)
    return found


# Run by tests/test_server.py against the gristmill server: the session's temporary server runs
# no scheduler, so the runs that fall due and would turn Late only appear with a real one.
def serve_logs_runs_and_pauses_on_sigterm(api: str, tmp_path: Path, interval: int = 3600) -> None:
    """Serve a recipe against `api`, start a run of its deployment, SIGTERM the serve: a line per
    run start and end, exit 0, the deployment paused and no run left Scheduled to turn Late (with
    a server that schedules and a short interval, runs fall due while another one runs)."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    recipe = _recipe(tmp_path, files=1, docs=20, name="scheduled")
    ws = tmp_path / "ws"
    log = tmp_path / "serve.log"
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    served = subprocess.Popen(
        [sys.executable, "-m", "gristmill.cli", "serve", str(recipe), "--interval", str(interval),
         "-w", str(ws)],
        env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"),
        # As a shell starts a background job: SIGINT ignored, so SIGTERM must not lean on it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    try:
        _wait_for(lambda: "serving deployment" in log.read_text(), "serving", served, log, 120)
        with (
            temporary_settings(updates={PREFECT_API_URL: api}),
            get_client(sync_client=True) as client,
        ):
            deployment = client.read_deployment_by_name("run-recipe/scheduled")
            created = client.create_flow_run_from_deployment(deployment.id)
        # Named after the recipe, told apart by the run's id.
        run = rf"run recipe scheduled \({str(created.id)[:8]}\)"
        ended = re.compile(rf"{run} ended Completed after [0-9.]+ s")
        _wait_for(lambda: ended.search(log.read_text()), "no run ended", served, log, 240)
        served.send_signal(signal.SIGTERM)
        assert served.wait(timeout=60) == 0, log.read_text()
    finally:
        _stop(served)
    text = log.read_text()
    assert re.search(rf"{run} started", text), text
    assert "stopping" in text and "schedule of run-recipe/scheduled is paused" in text
    assert "Traceback" not in text, text
    assert httpx.get(f"{api}/deployments/{deployment.id}", timeout=10).json()["paused"]
    scheduled = httpx.post(
        f"{api}/flow_runs/filter",
        json={"deployments": {"id": {"any_": [str(deployment.id)]}},
              "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}},
        timeout=10,
    ).json()  # fmt: skip
    assert scheduled == []
    assert len(_members(ws, "sample")) > 0


@contextlib.contextmanager
def _new_listeners() -> Iterator[list[tuple[str, str]]]:
    """(process name, local address) of every socket that starts listening, in this process or
    one below it, while the block runs (sampled every 0.5 s; filled in when the block ends)."""
    import psutil

    me = psutil.Process()

    def listening() -> dict[tuple[int, str, int], int]:
        return {
            (c.pid, c.laddr.ip, c.laddr.port): c.pid
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid is not None
        }

    before = set(listening())
    seen: dict[tuple[int, str, int], str] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            ours = {p.pid: p for p in me.children(recursive=True)} | {me.pid: me}
            for key, pid in listening().items():
                if key not in before and key not in seen and pid in ours:
                    with contextlib.suppress(psutil.Error):
                        seen[key] = ours[pid].name()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    found: list[tuple[str, str]] = []
    try:
        yield found
    finally:
        stop.set()
        sampler.join()
        found += [(name, ip) for (_, ip, _), name in seen.items()]


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 from a dual-stack socket
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


@pytest.mark.slow
def test_ray_and_dask_select_what_threads_select(tmp_path: Path) -> None:
    """Ray on a cluster the run starts; Dask on an existing cluster given by its address. Every
    component of both listens on loopback only."""
    from gristmill.flows.tasks import _dask_cluster_kwargs

    recipe = _recipe(tmp_path, files=3, docs=30)
    run_recipe_flow(load_recipe(recipe), str(tmp_path / "threads"), "threads", 2)
    missing = []
    for runner in ("ray", "dask"):
        try:
            __import__(f"prefect_{runner}")
        except ImportError:
            missing.append(runner)
            continue
        if runner == "ray":
            with _new_listeners() as listeners:
                run_recipe_flow(load_recipe(recipe), str(tmp_path / runner), runner, 2)
            assert {"gcs_server", "raylet"} <= {name for name, _ in listeners}, listeners
        else:
            from distributed import LocalCluster

            with _new_listeners() as listeners, LocalCluster(**_dask_cluster_kwargs(2)) as dask:
                address = dask.scheduler_address
                run_recipe_flow(load_recipe(recipe), str(tmp_path / runner), runner, None, address)
            assert len(listeners) >= 3, listeners  # the scheduler and two workers at least
        assert [(name, ip) for name, ip in listeners if not _loopback(ip)] == [], runner
        for selection in ("clean", "sample"):
            assert _members(tmp_path / runner, selection) == _members(
                tmp_path / "threads", selection
            )
    if missing:
        pytest.skip(f"extras not installed: {', '.join(missing)} (pip install 'gristmill[...]')")


def test_recipe_reads_fsspec_urls(tmp_path: Path) -> None:
    """`file://` and `memory://` inputs, JSONL and Parquet, give the same corpus as local paths."""
    import fsspec
    import pyarrow as pa

    records = [{"text": good_text(i), "site": f"s{i % 2}"} for i in range(12)]
    local = write_jsonl(tmp_path / "in" / "a.jsonl", records)
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "in" / "b.parquet")
    memory = fsspec.filesystem("memory")
    memory.pipe("/gristmill-test/in/a.jsonl", local.read_bytes())
    memory.pipe("/gristmill-test/in/b.parquet", (tmp_path / "in" / "b.parquet").read_bytes())
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "ingest": [
                    {"corpus": "local", "paths": [str(tmp_path / "in")]},
                    {"corpus": "file", "paths": [f"file://{tmp_path / 'in'}"]},
                    {"corpus": "memory", "paths": ["memory://gristmill-test/in"]},
                ]
            }
        ),
        encoding="utf-8",
    )
    loaded = load_recipe(recipe)
    assert loaded.ingest[2].paths == ["memory://gristmill-test/in"]
    result = run_recipe_flow(loaded, str(tmp_path / "ws"), "threads", 1)
    stats = [r["stats"] for r in result["ingest"]]
    assert [s["documents"] for s in stats] == [24, 24, 24]
    assert all(s["reconciles"] and s["sources"] == 2 for s in stats)
    memory.rm("/gristmill-test", recursive=True)


def _has_open(process: subprocess.Popen, path: Path) -> bool:
    """Whether `process` has `path` open (a waiting writer keeps the lock file open)."""
    import psutil

    return any(Path(f.path) == path for f in psutil.Process(process.pid).open_files())


def _wait_for_lock_waiter(process: subprocess.Popen, lock: Path, timeout_s: float = 120) -> None:
    """Wait until `process` polls the workspace lock (it has opened the lock file)."""
    deadline = time.monotonic() + timeout_s
    while not _has_open(process, lock):
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, f"no wait for {lock} within {timeout_s} s"
        time.sleep(0.1)


@pytest.mark.slow
def test_two_runs_of_one_recipe_wait_or_fail_clearly(tmp_path: Path) -> None:
    """While a writer holds the workspace, another `gristmill run` fails clearly or waits.

    The test process is the first writer, so the lock is held for as long as the test needs
    (a real first run may finish before a loaded box starts the second)."""
    recipe = _recipe(tmp_path, files=2, docs=40)  # the lock, not the work, is under test
    ws = tmp_path / "ws"
    command = [sys.executable, "-m", "gristmill.cli", "run", str(recipe), "-w", str(ws),
               "--workers", "1"]  # fmt: skip
    env = {**os.environ, "PREFECT_API_URL": _api_url()}
    with Workspace(ws).write_lock("run nightly"):
        # Both runs start together (one wait for an interpreter's start-up, not two).
        patient = subprocess.Popen(
            command, env={**env, "GRISTMILL_LOCK_TIMEOUT": "300"}, stderr=subprocess.PIPE
        )
        try:
            busy = subprocess.run(
                command, env={**env, "GRISTMILL_LOCK_TIMEOUT": "0.5"}, capture_output=True,
                text=True, timeout=300,
            )  # fmt: skip
            assert busy.returncode != 0
            assert re.search(r"workspace busy.*run nightly", busy.stderr.replace("\n", " "))
            _wait_for_lock_waiter(patient, ws / ".lock")
            time.sleep(1)  # ten of its polls of the lock
            assert patient.poll() is None  # still waiting while the lock is held
            assert _has_open(patient, ws / ".lock")
        except BaseException:
            _stop(patient)
            raise
    # Released: the patient run goes on and does the whole recipe.
    assert patient.wait(timeout=300) == 0, patient.stderr.read() if patient.stderr else ""

    clean = tmp_path / "clean"
    run_recipe_flow(load_recipe(recipe), str(clean), "threads", 1)
    for selection in ("clean", "sample"):
        assert _members(ws, selection) == _members(clean, selection)
    assert queries.corpus_stats(Workspace(ws), "web")["reconciles"]


@pytest.mark.slow
def test_run_includes_the_experiment_and_publishes_its_artifacts(tmp_path: Path) -> None:
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from test_training import RECIPE, _experiment_inputs
    from typer.testing import CliRunner

    from gristmill.cli import app
    from gristmill.flows.ui import artifact_key

    _experiment_inputs(tmp_path)
    recipe = tmp_path / "recipe.yaml"
    # The artifacts, not what the models learn, are under test: one seed, a few steps each.
    smaller = {"seeds: [0, 1]": "seeds: [0]", "tokens: 4096": "tokens: 1024",
               "max_steps: 20": "max_steps: 4", "max_steps: 8": "max_steps: 2",
               "max_train_examples: 200": "max_train_examples: 32",
               "max_test_examples: 60": "max_test_examples: 16",
               "max_eval_docs: 20": "max_eval_docs: 8"}  # fmt: skip
    text = RECIPE
    for before, after in smaller.items():
        assert before in text, before  # test_training's recipe changed: update this list
        text = text.replace(before, after)
    recipe.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(recipe), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [s["selection"]["name"] for s in summary["select"]] == ["long-stories"]
    run_id = summary["experiment"]["run_id"]
    training = "continue pretraining: long-stories, seed 0"  # the trainer's progress label
    keys = [artifact_key("experiment", run_id), artifact_key("report", run_id)]
    with get_client(sync_client=True) as client:
        found = {
            a.key: a
            for a in client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)), limit=50
            )
        }
        progress = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[artifact_key("progress", training)])
            ),
            limit=50,
        )
    table = found[keys[0]]
    rows = table.data if isinstance(table.data, list) else json.loads(table.data)
    pairs = {(r["arm"], r["metric"]) for r in rows}
    assert {("none", "accuracy"), ("long-stories", "bits_per_byte")} <= pairs
    report = found[keys[1]]
    assert report.type == "markdown" and run_id in report.data
    assert progress and progress[0].type == "progress" and progress[0].data == 100.0


def test_serve_refuses_a_bad_schedule(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gristmill.cli import app

    recipe = _recipe(tmp_path, files=1, docs=2)
    for args in (["--cron", "every night"], ["--interval", "0"], ["--cron", "0 3 * * *",
                 "--interval", "60"], []):  # fmt: skip
        result = CliRunner().invoke(app, ["serve", str(recipe), *args])
        assert result.exit_code == 2, (args, result.output)
        assert "--cron" in result.output or "--interval" in result.output


def test_flows_import_without_the_training_stack_and_still_tie_the_temporary_server() -> None:
    """`from gristmill.flows import curate_flow` loads neither torch nor SciPy nor Prefect's
    server (seconds each on a small machine); the watchdog that ties a temporary API server
    to this process is installed when Prefect imports its server, before it starts one."""
    script = (
        "import sys\n"
        "from gristmill.flows import curate_flow, ingest_flow, materialize_flow\n"
        "heavy = ('torch', 'transformers', 'sentence_transformers', 'scipy',\n"
        "         'prefect.server.api.server', 'gristmill.flows.zoo')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "from prefect.server.api.server import SubprocessASGIServer\n"
        "from gristmill.flows import api_server\n"
        "print(SubprocessASGIServer._run_uvicorn_command is api_server._run_watched_uvicorn)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.split("\n")[:2] == ["[]", "True"], done.stdout + done.stderr
