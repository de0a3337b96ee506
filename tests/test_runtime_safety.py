"""Runtime safety: task results are JSON and a tampered one never runs code; a killed export
leaves no staging directory for good; no temporary Prefect server outlives its command; Ray's
own task runner starts Ray on loopback."""

from __future__ import annotations

import base64
import inspect
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import good_text, write_jsonl

from gristmill.flows import curate_flow, ingest_flow
from gristmill.storage import Workspace, exporters, queries

pytestmark = pytest.mark.usefixtures("prefect_server")


class _CreatesFileWhenUnpickled:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (str(self.path), "w"))


def _result_files(ws: Path) -> list[Path]:
    return sorted(p for p in (ws / "prefect-results").rglob("*") if p.is_file())


def test_task_results_are_json_and_a_tampered_one_never_runs(tmp_path: Path) -> None:
    raw = write_jsonl(tmp_path / "a.jsonl", [{"text": good_text(i)} for i in range(10)])
    ws = tmp_path / "ws"

    def ingest() -> int:
        ingest_flow(str(ws), [str(raw)], "c")
        stats = queries.corpus_stats(Workspace(ws), "c")
        assert stats["reconciles"]
        return stats["documents"]

    assert ingest() == 10
    files = _result_files(ws)
    assert files
    for file in files:
        text = file.read_text(encoding="utf-8")
        json.loads(text)  # every file is plain JSON ...
        assert "pickle" not in text  # ... and names no pickle serializer

    # A record that claims Prefect's pickle serializer and would create a file when unpickled.
    marker = tmp_path / "code-ran"
    payload = base64.b64encode(pickle.dumps(_CreatesFileWhenUnpickled(marker))).decode()
    for file in files:
        record = {
            "metadata": {
                "storage_key": str(file),
                "expiration": None,
                "serializer": {"type": "pickle", "picklelib": "cloudpickle"},
                "prefect_version": "3.8.8",
                "storage_block_id": None,
            },
            "result": payload,
        }
        file.write_text(json.dumps(record), encoding="utf-8")
    (ws / "catalog.duckdb").unlink()  # the chunk is unrecorded: the task cache is consulted
    assert ingest() == 10  # computed again
    assert not marker.exists()

    for file in _result_files(ws):
        file.write_bytes(b"\x80\x04garbage")
    (ws / "catalog.duckdb").unlink()
    assert ingest() == 10
    assert not marker.exists()


def test_nothing_else_is_persisted_and_only_result_records_are_written() -> None:
    """Flows and experiment tasks keep their results in memory, even where Prefect's settings
    persist results by default (with pickle); worker tasks write only their own records."""
    from gristmill.flows import experiment, run_recipe_flow, tasks, zoo_build_flow
    from gristmill.flows.results import ResultJSONSerializer

    flows = [tasks.ingest_flow, tasks.curate_flow, tasks.materialize_flow, run_recipe_flow,
             experiment.experiment_flow, zoo_build_flow]  # fmt: skip
    assert [f.name for f in flows if f.persist_result is not False] == []
    assert experiment.base_model_task.persist_result is experiment.arm_task.persist_result is False
    import gristmill.pipeline.transformation  # noqa: F401  (registers its unit kind)
    from gristmill.pipeline.units import UNIT_KINDS

    assert len(UNIT_KINDS) >= 3  # ingest, score, transform at least
    for fn in UNIT_KINDS:
        worker = tasks.unit_task(fn)
        assert worker.persist_result is False
        assert isinstance(worker.result_serializer, ResultJSONSerializer)
    with pytest.raises(TypeError, match="not a gristmill task result"):
        ResultJSONSerializer().dumps({"any": "dict"})


@pytest.fixture
def selection(tmp_path: Path) -> Path:
    """A workspace with corpus `pool` and a selection `all` of it."""
    raw = write_jsonl(tmp_path / "raw" / "pool.jsonl", [{"text": good_text(i)} for i in range(8)])
    ws = tmp_path / "ws"
    ingest_flow(str(ws), [str(raw)], "pool")
    curate_flow(str(ws), "pool", "quality", name="all")
    return ws


def _export_in_child(ws: Path, out: Path, replace: str) -> subprocess.Popen:
    """`materialize` in a child process whose final swap into place is replaced by `replace`."""
    script = (
        "import os, signal, sys, time\n"
        "from gristmill.storage import Workspace, exporters\n"
        f"exporters.os.replace = lambda *args: {replace}\n"
        "exporters.materialize(Workspace(sys.argv[1]), 'all', sys.argv[2])\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", script, str(ws), str(out)], stdout=subprocess.PIPE, text=True
    )


def test_a_killed_export_leaves_no_staging_directory_for_good(
    selection: Path, tmp_path: Path
) -> None:
    out = tmp_path / "exports" / "out"
    killed = _export_in_child(selection, out, "os.kill(os.getpid(), signal.SIGKILL)")
    assert killed.wait(timeout=120) == -signal.SIGKILL
    left_behind = list(out.parent.glob(".out.tmp-*"))
    assert len(left_behind) == 1 and (left_behind[0] / "data.parquet").exists()

    other_target = out.parent / ".other.tmp-abc"  # another export's: not ours to remove
    other_target.mkdir()
    running = _export_in_child(selection, out, "print('staged', flush=True) or time.sleep(120)")
    try:
        assert running.stdout is not None and running.stdout.readline().strip() == "staged"
        [held] = set(out.parent.glob(".out.tmp-*")) - set(left_behind)
        result = exporters.materialize(Workspace(selection), "all", out)
        assert result["documents"] == 8 and (out / "data.parquet").exists()
        assert not any(p.exists() for p in left_behind)  # the killed export's staging is gone
        assert held.is_dir() and other_target.is_dir()  # a running export's is kept
    finally:
        running.kill()
        running.wait()


def _temporary_servers(process: psutil.Process) -> list[psutil.Process]:
    """Prefect API servers (uvicorn) below a process."""
    found = []
    for child in process.children(recursive=True):
        try:
            if any("prefect.server.api.server" in arg for arg in child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow
def test_no_temporary_prefect_server_outlives_its_command(tmp_path: Path) -> None:
    raw = write_jsonl(tmp_path / "a.jsonl", [{"text": good_text(i)} for i in range(3)])
    ws = tmp_path / "ws"
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env.update({"PREFECT_HOME": str(home), "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "r"),
                "GRISTMILL_LOCK_TIMEOUT": "300"})  # fmt: skip
    command = [sys.executable, "-m", "gristmill.cli", "ingest", str(raw), "--corpus", "c",
               "-w", str(ws)]  # fmt: skip
    servers: list[psutil.Process] = []
    # This process holds the workspace, so the command waits, its temporary server up, until
    # it is killed.
    with Workspace(ws).write_lock("the test"):
        child = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 180
            while not any(s.net_connections(kind="inet") for s in servers):
                assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
                assert time.monotonic() < deadline, "no temporary Prefect server started"
                time.sleep(0.2)
                servers = _temporary_servers(psutil.Process(child.pid)) or servers
            child.send_signal(signal.SIGKILL)
            child.wait()
            deadline = time.monotonic() + 10
            while not all(_gone(s) for s in servers) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert all(_gone(s) for s in servers), "the temporary Prefect server outlived it"
        finally:
            child.kill()
            child.wait()
            for server in servers:
                if not _gone(server):
                    server.kill()


def test_the_ray_task_runner_starts_its_own_ray_on_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without an address, the runner starts Ray itself, through the loopback-only start that
    `cluster` uses (checked socket by socket in test_orchestration), not prefect-ray's."""
    pytest.importorskip("prefect_ray")
    import ray

    from gristmill.flows import ray_runner, task_runner

    class Started(Exception):
        pass

    def start(**init_kwargs: object) -> None:
        raise Started(init_kwargs)

    monkeypatch.setattr(ray_runner, "start_local_ray", start)
    assert not ray.is_initialized()
    with pytest.raises(Started) as started, task_runner("ray", 3):
        pass
    assert started.value.args[0]["num_cpus"] == 3


def test_a_local_ray_start_never_joins_another_ray_on_the_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ray.init without an address joins the newest Ray it finds running (another user's, or
    another test's cluster); gristmill's own local start asks for a new instance."""
    pytest.importorskip("prefect_ray")
    from gristmill.flows import ray_runner

    class Initialised(Exception):
        pass

    def init(**kwargs: object) -> None:
        raise Initialised(kwargs)

    monkeypatch.setattr(ray_runner.ray, "init", init)
    with pytest.raises(Initialised) as called:
        ray_runner.start_local_ray(num_cpus=2)
    assert called.value.args[0]["address"] == "local"
    assert called.value.args[0]["num_cpus"] == 2


def test_flow_runs_keep_heartbeats_but_do_not_wait_for_their_thread() -> None:
    """Prefect's sync engine joins its heartbeat thread, which sleeps in whole seconds, at the
    end of every flow run; gristmill's flows leave it to stop by itself."""
    import functools

    from prefect import flow_engine

    import gristmill.flows.tasks  # noqa: F401  (applies it)
    from gristmill.flows.heartbeats import stop_joining_heartbeats

    hook = flow_engine._send_heartbeats
    assert isinstance(hook, functools.partial) and hook.keywords == {"join_on_exit": False}
    assert "join_on_exit" in inspect.signature(hook.func).parameters
    assert stop_joining_heartbeats() and flow_engine._send_heartbeats is hook  # idempotent
