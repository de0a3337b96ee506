"""Crash and concurrency: SIGKILL during ingest then resume; a busy workspace fails clearly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from conftest import PROSE
from ingest_helpers import ingest_catalogued

from gristmill.errors import WorkspaceBusyError
from gristmill.storage import Workspace
from gristmill.storage.readers import IngestOptions

pytestmark = pytest.mark.usefixtures("prefect_server")


def _gristmill(*args: str) -> list[str]:
    return [sys.executable, "-m", "gristmill.cli", *args]


def _env() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    # Point the child at the session's test server so it does not start its own.
    return {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value() or ""}


def _big_input(path: Path, n: int) -> Path:
    with path.open("w") as handle:
        for i in range(n):
            handle.write(json.dumps({"text": f"{i} {PROSE}", "n": i}) + "\n")
    return path


def _shard_files(ws: Path, corpus: str) -> list[Path]:
    return sorted((ws / "corpora" / corpus).glob("*.parquet"))


@pytest.mark.slow
def test_sigkill_during_ingest_then_resume(tmp_path: Path) -> None:
    source = _big_input(tmp_path / "big.jsonl", 60_000)  # ~34 MB, ~70 chunks of 0.5 MB
    ws = tmp_path / "ws"
    command = _gristmill("ingest", str(source), "--corpus", "big", "--chunk-mb", "0.5",
                         "--shard-mb", "0.25", "-w", str(ws), "--workers", "2")  # fmt: skip
    child = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_shard_files(ws, "big")) < 6:
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert len(_shard_files(ws, "big")) >= 6

    with duckdb.connect(str(ws / "catalog.duckdb"), read_only=True) as con:
        done_before = con.execute("select count(*) from chunks").fetchall()[0][0]
    finished = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr

    # No broken shard, no temporary file, no duplicate, nothing missing, counts reconcile.
    files = _shard_files(ws, "big")
    assert not list((ws / "corpora" / "big").glob(".*"))
    ids, lines = [], []
    for file in files:
        table = pq.read_table(file, columns=["doc_id", "source_line"])
        ids += table["doc_id"].to_pylist()
        lines += table["source_line"].to_pylist()
    assert len(ids) == len(set(ids)) == 60_000
    assert sorted(lines) == list(range(1, 60_001))
    with duckdb.connect(str(ws / "catalog.duckdb"), read_only=True) as con:
        catalogued = {r[0] for r in con.execute("select path from shards").fetchall()}
        read, docs, rejected = con.execute(
            "select sum(records_read), sum(documents), sum(rejected) from chunks"
        ).fetchall()[0]
        done_after = con.execute("select count(*) from chunks").fetchall()[0][0]
    assert catalogued == {f.relative_to(ws).as_posix() for f in files}
    assert (read, docs, rejected) == (60_000, 60_000, 0)
    assert done_after > done_before  # the resumed run did only the unfinished chunks

    # Same ids as an uninterrupted run (of the library pipeline the command's flow maps).
    clean = tmp_path / "clean"
    options = IngestOptions(chunk_bytes=int(0.5 * 2**20), shard_bytes=int(0.25 * 2**20))
    ingest_catalogued(clean, [source], "big", options)
    clean_ids = set()
    for file in _shard_files(clean, "big"):
        clean_ids |= set(pq.read_table(file, columns=["doc_id"])["doc_id"].to_pylist())
    assert clean_ids == set(ids)


def test_second_writer_gets_workspace_busy(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from gristmill.storage import Workspace\n"
         f"with Workspace({str(ws)!r}).write_lock('holder'):\n"
         "    print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        lock = Workspace(ws).write_lock("second", timeout=1)
        with pytest.raises(WorkspaceBusyError, match=r"workspace busy.*holder"), lock:
            pass
        assert 0.9 < time.monotonic() - started < 10
        from typer.testing import CliRunner

        from gristmill.cli import app

        data = tmp_path / "a.jsonl"
        data.write_text('{"text": "hello"}\n')
        result = CliRunner().invoke(app, ["ingest", str(data), "--corpus", "c", "-w", str(ws)])
        assert result.exit_code == 1 and "workspace busy" in result.output
    finally:
        holder.kill()
        holder.wait()
    with Workspace(ws).write_lock("after", timeout=1):
        pass  # released when the holder died


def test_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    with ws.write_lock("outer"), ws.write_lock("inner", timeout=0.2):
        pass
    with ws.write_lock("again", timeout=0.2):
        pass
