"""A real Ray cluster: a head node with two worker CPUs, started by the test on loopback, runs a
recipe whose dedup partitions and selection are tasks; clusters and selections are the threads
runner's."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import PROSE, write_jsonl

from gristmill.flows import run_recipe_flow
from gristmill.recipe import load_recipe

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
WORDS = sorted(set(PROSE.lower().replace(",", "").replace(".", "").replace(";", "").split()))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def ray_head(temp_dir: Path, env: dict[str, str]) -> Iterator[str]:
    """`ray start --head` on loopback with 2 CPUs (two worker processes); its address.

    Ray's single-machine mode (the variable below) keeps every component of the head on
    127.0.0.1; the run joins it on loopback by itself (flows/ray_runner.py). The head runs in the
    foreground (`--block`) in its own process group, which is stopped at the end: `ray stop`
    would stop every Ray on the machine.
    """
    port, client_port = _free_port(), _free_port()
    ray = Path(sys.executable).with_name("ray")
    command = [str(ray), "start", "--head", "--block", "--port", str(port),
               "--ray-client-server-port", str(client_port), "--node-ip-address", "127.0.0.1",
               "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats",
               "--temp-dir", str(temp_dir)]  # fmt: skip
    temp_dir.mkdir()
    log = temp_dir / "head.log"
    env = {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    with open(log, "wb") as out:
        head = subprocess.Popen(command, env=env, start_new_session=True, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 90  # about 5 s on a quiet machine
        while b"Ray runtime started" not in log.read_bytes():
            if head.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"ray start --head did not come up:\n{tail}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _cluster_env() -> dict[str, str]:
    """The head's and the run's environment: this test's Prefect API and a token of the
    cluster's own that keeps other users of the machine out."""
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}  # fmt: skip


def _recipe(tmp_path: Path) -> Path:
    """Three files of word-salad families (near copies: one word changed), then two steps."""
    rng = np.random.default_rng(5)
    for f in range(3):
        records = []
        for family in range(8):
            base = list(rng.choice(WORDS, 60))
            for copy in range(3):
                words = list(base)
                words[int(rng.integers(60))] = f"edit{copy}" if copy else words[0]
                records.append({"text": " ".join(words), "id": f"{f}-{family}-{copy}"})
        write_jsonl(tmp_path / "raw" / f"part-{f}.jsonl", records)
    recipe = {
        "name": "cluster",
        "ingest": [{"corpus": "pool", "paths": [str(tmp_path / "raw")], "id_field": "id"}],
        "select": [
            {"name": "deduped", "corpus": "pool", "selector": "dedup",
             "params": {"threshold": 0.7, "partitions": 4}},
            {"name": "sample", "selector": "quality", "budget": "50%"},
        ],
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def _results(ws: Path) -> tuple[list, list, list]:
    """The dedup set signal's rows and both selections' members."""
    (signal,) = ws.glob("signals/pool/dedup_set/*/set.parquet")
    clusters = pq.read_table(signal).sort_by("doc_id").to_pylist()
    members = [
        pq.read_table(ws / "selections" / name / "members.parquet").to_pylist()
        for name in ("deduped", "sample")
    ]
    return clusters, members[0], members[1]


def _dedup_task_runs(since: datetime) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterStartTime

    since_filter = TaskRunFilter(start_time=TaskRunFilterStartTime(after_=since))
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=since_filter, limit=200)
    return sorted(r.name for r in runs if r.name.startswith(("cut bands", "dedup edges")))


def test_a_ray_cluster_clusters_and_selects_what_threads_do(tmp_path: Path) -> None:
    pytest.importorskip("prefect_ray")
    recipe = _recipe(tmp_path)
    run_recipe_flow(load_recipe(recipe), str(tmp_path / "threads"), "threads", 2)
    expected = _results(tmp_path / "threads")
    assert 24 <= sum(r["duplicate_of"] is not None for r in expected[0]) <= 48  # near copies
    env = _cluster_env()
    # A short temporary directory: Ray's socket paths must stay under 108 bytes.
    with ray_head(Path("/tmp") / f"gm-ray-{os.getpid()}", env) as address:
        began = datetime.now(UTC)
        command = [sys.executable, "-m", "gristmill.cli", "run", str(recipe), "-w",
                   str(tmp_path / "ray"), "--runner", "ray", "--address", address]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    assert _results(tmp_path / "ray") == expected
    # the band cut and the partitions ran as tasks of the cluster's run
    tasks = _dedup_task_runs(began)
    assert any(t.startswith("cut bands of feature file") for t in tasks), tasks
    assert any(t.startswith("dedup edges of partition") for t in tasks), tasks
