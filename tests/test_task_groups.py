"""Small units run grouped into Prefect tasks of enough work, cached and recorded per unit;
flow and task runs are named after what they do."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import good_text, write_jsonl
from prefect import flow

from gristmill import pipeline
from gristmill.flows import curate_flow, ingest_flow, materialize_flow
from gristmill.flows.tasks import PrefectMap, task_runner
from gristmill.pipeline.map import plan_groups
from gristmill.pipeline.units import ShardUnit, score_unit
from gristmill.selectors import registry
from gristmill.selectors.scoring import plan_scoring
from gristmill.storage import Workspace, catalog

FILES = 12


def test_groups_cover_every_unit_once_in_order_with_enough_work() -> None:
    sizes = [100] * 40
    groups = plan_groups(sizes, workers=2, target_bytes=1000)
    assert [i for g in groups for i in g] == list(range(40))
    assert [len(g) for g in groups] == [10, 10, 10, 10]
    # A big share would leave a worker idle: every worker gets two groups at least.
    assert [len(g) for g in plan_groups(sizes, workers=2, target_bytes=10**9)] == [10] * 4
    # Units bigger than the target run alone; a unit of unknown size runs alone.
    assert plan_groups([5000, 5000, 5000, 5000], workers=1, target_bytes=1000) == [
        range(0, 1), range(1, 2), range(2, 3), range(3, 4)
    ]  # fmt: skip
    assert plan_groups([10, None, 10, 10], workers=1, target_bytes=1000) == [
        range(0, 1), range(1, 2), range(2, 4)
    ]  # fmt: skip
    assert plan_groups([], workers=2) == []


def _corpus(tmp_path: Path) -> Path:
    """`FILES` JSONL files of 20 documents, one chunk and one shard each."""
    raw = tmp_path / "raw"
    for f in range(FILES):
        texts = [good_text(f * 20 + i) if i % 5 else "buy now " * 3 for i in range(20)]
        write_jsonl(raw / f"part-{f:03d}.jsonl", [{"text": t} for t in texts])
    return raw


def _runs(flow_run_id: Any, has_tasks: bool = True) -> tuple[str, list[str]]:
    """A flow run's name and its task runs' names, once their states have reached the API
    (`has_tasks` False: a flow without tasks, nothing to wait for)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 30
        while True:
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            done = all(t.state is not None and t.state.is_final() for t in tasks)
            if (tasks and done) or not has_tasks or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        name = client.read_flow_run(flow_run_id).name
    return name, sorted(t.name for t in tasks)


@pytest.mark.usefixtures("prefect_server")
def test_grouped_runs_select_what_the_library_selects_and_read_well(tmp_path: Path) -> None:
    raw = _corpus(tmp_path)
    ws, library = tmp_path / "ws", tmp_path / "library"
    runner = task_runner("threads", 2)
    state = ingest_flow.with_options(task_runner=runner)(
        str(ws), [str(raw)], "web", return_state=True
    )
    assert state.result()["added"]["documents"] == FILES * 20
    name, tasks = _runs(state.state_details.flow_run_id)
    # 12 small chunks in 4 tasks (two per worker), each named by its first and last file.
    assert name == "ingest web"
    assert tasks == [f"ingest part-{a:03d}.jsonl .. part-{b:03d}.jsonl (3 chunks)"
                     for a, b in ((0, 2), (3, 5), (6, 8), (9, 11))]  # fmt: skip
    state = curate_flow.with_options(task_runner=runner)(
        str(ws), "web", "quality", budget="50%", name="clean", return_state=True
    )
    assert state.result()["shards_scored"] == FILES
    name, tasks = _runs(state.state_details.flow_run_id)
    assert name == "curate clean (quality)"
    assert tasks == [f"score shards {a:05d}-{b:05d} of web"
                     for a, b in ((0, 2), (3, 5), (6, 8), (9, 11))]  # fmt: skip
    state = materialize_flow(str(ws), "clean", str(tmp_path / "out"), return_state=True)
    name, _ = _runs(state.state_details.flow_run_id, has_tasks=False)
    assert name == f"materialize clean -> {tmp_path}/out"

    pipeline.ingest(library, [str(raw)], "web")
    pipeline.curate(library, "web", "quality", budget="50%", name="clean")
    members = [pq.read_table(w / "selections" / "clean" / "members.parquet") for w in (ws, library)]
    assert members[0].equals(members[1]) and members[0].num_rows > 0

    # One shard's scores deleted: that shard alone is planned again, in a task of its own.
    signal_file = next((ws / "signals" / "web" / "quality").glob("*/*.parquet"))
    signal_file.unlink()
    state = curate_flow(str(ws), "web", "quality", score_only=True, return_state=True)
    assert (state.result()["shards_scored"], state.result()["shards_reused"]) == (1, FILES - 1)
    name, tasks = _runs(state.state_details.flow_run_id)
    assert name == "score web (quality)" and len(tasks) == 1
    assert tasks[0].startswith("score shard 000") and signal_file.exists()


@pytest.mark.usefixtures("prefect_server")
def test_a_group_reuses_each_finished_unit_and_redoes_only_what_changed(tmp_path: Path) -> None:
    """The task cache is per unit: a group with one shard changed, or one result's file gone,
    runs only that unit; the other units' results are served and their files kept."""
    raw = _corpus(tmp_path)
    ws = Workspace(tmp_path / "ws")
    pipeline.ingest(ws, [str(raw)], "web")
    selector = registry.get("quality").from_params({})
    plan = plan_scoring(ws, "web", selector)
    units = [ShardUnit(str(ws.root), "web", s, selector, plan.config_hash) for s in plan.todo]

    @flow(task_runner=task_runner("threads", 1), persist_result=False)
    def score(units: list[ShardUnit]) -> list[Any]:
        return list(PrefectMap(ws, workers=1)(score_unit, units))

    def versions() -> dict[str, tuple[int, int]]:
        files = (ws.root / "signals").rglob("*.parquet")
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in files}

    first = score(units)
    assert len(first) == FILES
    before = versions()
    assert score(units) == first and versions() == before  # every unit served from its cache
    # One result's file deleted and one shard's content changed (a new content hash).
    gone = ws.root / first[0].path
    gone.unlink()
    changed = dict(units[5].shard, content_hash="0" * 16)
    units[5] = ShardUnit(str(ws.root), "web", changed, selector, plan.config_hash)
    again = score(units)
    after = versions()
    assert gone.exists() and after[gone.name] != before[gone.name]
    assert again[5].shard_hash == "0" * 16 and f"{'0' * 16}.parquet" in after
    kept = [info.path for i, info in enumerate(first) if i not in (0, 5)]
    assert all(after[Path(p).name] == before[Path(p).name] for p in kept)
    with ws.catalog(read_only=True) as con:
        assert len(catalog.shards(con, "web")) == FILES
