"""The library pipeline: whole ingest and curation steps without Prefect, over any work map."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import good_text, write_jsonl

from gristmill import pipeline
from gristmill.errors import InputError
from gristmill.pipeline import ThreadMap, serial_map
from gristmill.selectors.selection import SelectOptions
from gristmill.storage import catalog, queries
from gristmill.storage.readers import IngestOptions
from gristmill.storage.workspace import Workspace

FILES = 4
OPTIONS = IngestOptions(domain_field="site")
# (selector, params, budget, mode): per-shard and set selectors, document and token budgets.
STEPS = [
    ("quality", {}, None, None),
    ("quality", {}, "50%", "gumbel"),
    ("dedup", {}, "300tokens", None),
    ("coreset", {"dim": 32}, "12docs", None),
]


def _raw(tmp_path: Path) -> Path:
    """FILES JSONL files (a chunk and a shard each), with duplicates and junk among them."""
    raw = tmp_path / "raw"
    for f in range(FILES):
        records = []
        for i in range(12):
            text = good_text(f * 12 + i) if i % 5 else "buy now " * 3
            records.append({"text": good_text(i) if i == 3 else text, "site": f"s{i % 3}"})
        write_jsonl(raw / f"part-{f}.jsonl", records)
    return raw


def _curate_all(ws: Workspace, work_map: pipeline.WorkMap) -> list[pipeline.Curation]:
    curations = []
    for n, (selector, params, budget, mode) in enumerate(STEPS):
        options = SelectOptions(mode=mode, seed=3)
        curations.append(
            pipeline.curate(ws, "web", selector, params=params, budget=budget,
                            name=f"{selector}-{n}", options=options, work_map=work_map)
        )  # fmt: skip
    return curations


def _members(ws: Workspace, name: str) -> list[tuple[int, int]]:
    table = pq.read_table(ws.selection_dir(name) / "members.parquet")
    return list(zip(table["doc_id"].to_pylist(), table["rank"].to_pylist(), strict=True))


def test_serial_and_thread_maps_give_the_same_members_and_a_rerun_scores_nothing(
    tmp_path: Path,
) -> None:
    raw = _raw(tmp_path)
    serial, threaded = Workspace(tmp_path / "serial"), Workspace(tmp_path / "threaded")
    reports = [
        pipeline.ingest(serial, [str(raw)], "web", OPTIONS),
        pipeline.ingest(threaded, [str(raw)], "web", OPTIONS, work_map=ThreadMap(2)),
    ]
    for report in reports:
        assert report.chunks == FILES and report.chunks_skipped == 0
        added = report.added
        assert added["records_read"] == FILES * 12 == added["documents"] + added["rejected"]
        assert report.stats["reconciles"]
    assert reports[0].as_dict()["added"] == reports[1].as_dict()["added"]

    first = _curate_all(serial, serial_map)
    _curate_all(threaded, ThreadMap(2))
    for n, (selector, _, _, _) in enumerate(STEPS):
        name = f"{selector}-{n}"
        assert _members(serial, name) == _members(threaded, name), name
        assert len(_members(serial, name)) > 0
    assert first[0].scored == FILES and first[1].scored == 0  # the second quality step reuses
    assert first[2].sizes is not None and first[2].sizes_scored == FILES
    assert first[3].plan.signal == "coreset_set"

    again = pipeline.ingest(threaded, [str(raw)], "web", OPTIONS, work_map=ThreadMap(2))
    assert again.chunks_skipped == FILES and sum(again.added.values()) == 0
    for curation in _curate_all(threaded, ThreadMap(2)):
        assert (curation.scored, curation.reused, curation.sizes_scored) == (0, FILES, 0)


def test_score_only_records_no_selection_and_reports_like_the_flow(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    pipeline.ingest(ws, [str(_raw(tmp_path))], "web", OPTIONS)
    curation = pipeline.curate(ws, "web", "quality")
    assert curation.record is None and not (ws.root / "selections").exists()
    result = curation.as_dict()
    assert result == {
        "corpus": "web", "selector": "quality", "signal": "quality",
        "config_hash": curation.plan.config_hash, "shards_scored": FILES, "shards_reused": 0,
    }  # fmt: skip
    named = pipeline.curate(ws, "web", "quality", name="clean").as_dict()
    assert named["shards_reused"] == FILES and named["selection"]["name"] == "clean"
    with pytest.raises(InputError, match="needs a target"):
        pipeline.curate(ws, "web", "dsir")


def test_thread_map_yields_every_result_and_raises_a_unit_failure() -> None:
    assert sorted(ThreadMap(3)(lambda x: x * x, range(10))) == [x * x for x in range(10)]

    def fail_on_three(x: int) -> int:
        if x == 3:
            raise ValueError("unit 3")
        return x

    with pytest.raises(ValueError, match="unit 3"):
        list(ThreadMap(2)(fail_on_three, range(6)))


def test_the_library_pipeline_runs_without_prefect(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    script = f"""
import json, sys
from gristmill import pipeline
from gristmill.storage.readers import IngestOptions
ws = {str(tmp_path / "ws")!r}
report = pipeline.ingest(ws, [{str(raw)!r}], "web", IngestOptions(domain_field="site"))
curation = pipeline.curate(ws, "web", "quality", budget="10docs", name="d")
out = pipeline.materialize(ws, "d", {str(tmp_path / "out")!r})
print(json.dumps([report.added["documents"], curation.record["n_selected"],
                  sorted(m for m in sys.modules if m.split(".")[0] == "prefect")]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    documents, selected, prefect_modules = json.loads(done.stdout.strip().splitlines()[-1])
    assert documents > 0 and selected == 10
    assert prefect_modules == []


def test_a_selection_whose_inputs_did_not_change_is_kept_not_made_again(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    raw = _raw(tmp_path)
    pipeline.ingest(ws, [str(raw)], "web", OPTIONS)

    def select(name: str, budget: str, parent: str | None = None) -> dict:
        curation = pipeline.curate(ws, "web", "quality", budget=budget, name=name, parent=parent)
        assert curation.record is not None
        return curation.record

    def version(name: str) -> tuple[int, int]:
        stat = ws.members_path(name).stat()
        return stat.st_ino, stat.st_mtime_ns

    first = select("half", "50%")
    child = select("quarter", "50%", parent="half")
    assert not first["unchanged"] and not child["unchanged"]
    before = version("half")
    again = select("half", "50%")
    assert again["unchanged"] and version("half") == before  # no query, no rewrite
    assert again["created_at"] == first["created_at"] and again["n_selected"] == first["n_selected"]
    assert select("quarter", "50%", parent="half")["unchanged"]
    # Each input it depends on makes it again: the budget, the parent's members, the corpus,
    # and members that went missing.
    assert not select("half", "40%")["unchanged"]
    assert not select("quarter", "50%", parent="half")["unchanged"]  # its parent changed
    ws.members_path("quarter").unlink()
    assert not select("quarter", "50%", parent="half")["unchanged"]
    write_jsonl(
        raw / "part-9.jsonl", [{"text": good_text(500 + i), "site": "s0"} for i in range(6)]
    )
    pipeline.ingest(ws, [str(raw)], "web", OPTIONS)
    assert not select("half", "40%")["unchanged"]
    assert select("half", "40%")["unchanged"]


def test_up_to_date_checks_answer_only_when_a_step_would_change_nothing(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    raw = _raw(tmp_path)
    assert pipeline.ingest_if_done(ws, [str(raw)], "web", OPTIONS) is None  # a new corpus
    assert pipeline.curate_if_current(ws, "web", "quality", budget="50%", name="half") is None
    assert not ws.catalog_path.exists()  # the checks create nothing, not even the catalog
    pipeline.ingest(ws, [str(raw)], "web", OPTIONS)
    done = pipeline.ingest_if_done(ws, [str(raw)], "web", OPTIONS)
    assert done is not None
    assert done.as_dict() == pipeline.ingest(ws, [str(raw)], "web", OPTIONS).as_dict()
    write_jsonl(
        raw / "part-9.jsonl", [{"text": good_text(900 + i), "site": "s0"} for i in range(3)]
    )
    documents = done.stats["documents"]
    assert pipeline.ingest_if_done(ws, [str(raw)], "web", OPTIONS) is None
    assert queries.corpus_stats(ws, "web")["documents"] == documents  # nothing was ingested

    def current(budget: str, selector: str = "quality") -> pipeline.Curation | None:
        return pipeline.curate_if_current(ws, "web", selector, budget=budget, name="half")

    assert current("50%") is None  # nothing scored yet (and a chunk to ingest)
    pipeline.ingest(ws, [str(raw)], "web", OPTIONS)
    assert current("50%") is None  # scored, but no selection yet
    made = pipeline.curate(ws, "web", "quality", budget="50%", name="half")
    kept = current("50%")
    assert kept is not None and kept.record is not None and kept.record["unchanged"]
    again = pipeline.curate(ws, "web", "quality", budget="50%", name="half")
    assert kept.as_dict() == again.as_dict()
    assert kept.record["created_at"] == made.record["created_at"]
    assert current("40%") is None  # another budget: a new selection, which the check leaves
    assert _selection(ws, "half")["n_selected"] == made.record["n_selected"]
    # A set selector's stage is work the check does not do: always None.
    pipeline.curate(ws, "web", "dedup", name="unique")
    assert pipeline.curate_if_current(ws, "web", "dedup", name="unique") is None


def test_a_catalog_session_opens_the_catalog_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import duckdb

    ws = Workspace(tmp_path / "ws")
    pipeline.ingest(ws, [str(_raw(tmp_path))], "web", OPTIONS)
    opened: list[str] = []
    connect = duckdb.connect
    monkeypatch.setattr(duckdb, "connect", lambda *a, **k: opened.append(a[0]) or connect(*a, **k))
    with ws.catalog_session():
        for read_only in (True, False, True):
            with ws.catalog(read_only=read_only) as con:
                assert con.execute("select count(*) from corpora").fetchone() == (1,)
    assert len(opened) == 1
    with ws.catalog(read_only=True) as con:  # after the session: its own connection again
        con.execute("select 1")
    assert len(opened) == 2
    other = Workspace(tmp_path / "other")  # a session shares one workspace's catalog only
    with ws.catalog_session(), other.catalog() as con:
        con.execute("select 1")
    assert len(opened) == 4


def _corpora(ws: Workspace) -> list[str]:
    with ws.catalog(read_only=True) as con:
        return [row[0] for row in con.execute("select name from corpora").fetchall()]


def _selection(ws: Workspace, name: str) -> dict:
    with ws.catalog(read_only=True) as con:
        return catalog.get_selection(con, name)
