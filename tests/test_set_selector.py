"""Set-based selectors: per-shard features, then pool-level scores cached by features and parent."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from conftest import write_jsonl
from ingest_helpers import CORPUS, ingest_catalogued

from gristmill import pipeline
from gristmill.selectors.base import PoolFeatures, SelectorContext, SetSelector
from gristmill.selectors.selection import SelectOptions
from gristmill.storage.files import sql_files
from gristmill.storage.workspace import Workspace


class LongerThanMedian(SetSelector):
    """Keeps documents longer than the pool's median: a score no single shard can compute."""

    name: ClassVar[str] = "longer"
    calls: ClassVar[int] = 0

    def score(self, documents: pa.Table) -> pa.Table:
        return pa.table({"doc_id": documents["doc_id"], "length": documents["n_bytes"]})

    def score_set(self, context: SelectorContext, pool: PoolFeatures) -> pa.Table:
        LongerThanMedian.calls += 1
        assert pool.scratch.is_dir()
        table = pool.read(["length"])
        median = float(pc.approximate_median(table["length"]).as_py())
        score = pc.subtract(pc.cast(table["length"], pa.float64()), median)
        return pa.table({"doc_id": table["doc_id"], "score": score})


def _corpus(tmp_path: Path, n: int = 40) -> Workspace:
    path = tmp_path / "docs.jsonl"
    write_jsonl(path, [{"text": "word " * (i + 1)} for i in range(n)])
    return ingest_catalogued(tmp_path / "ws", [path])


def test_set_scores_span_the_pool_and_are_cached(tmp_path: Path) -> None:
    ws = _corpus(tmp_path)
    selector = LongerThanMedian(LongerThanMedian.Config())
    LongerThanMedian.calls = 0
    plan = pipeline.curate(ws, CORPUS, selector).plan
    assert plan.signal == "longer_set" and list(plan.stored) == ["set"]
    assert not (ws.absolute(plan.stored["set"]).parent / "scratch").exists()
    again = pipeline.curate(ws, CORPUS, selector)
    assert again.plan.stored == plan.stored and LongerThanMedian.calls == 1

    options = SelectOptions(mode="threshold", threshold=0.5)
    record = pipeline.curate(ws, CORPUS, selector, name="long", options=options).record
    assert record is not None
    assert record["n_selected"] == 20 and record["signal"] == "longer_set"
    members = pq.read_table(ws.selection_dir("long") / "members.parquet")
    shards = sql_files(sorted(ws.corpus_dir(CORPUS).glob("*.parquet")))
    with duckdb.connect() as con:
        rows = con.sql(f"select doc_id, n_bytes from read_parquet({shards})").fetchall()
    lengths = dict(rows)
    assert min(lengths[d] for d in members["doc_id"].to_pylist()) == 21 * 5


def test_set_scores_restricted_to_a_parent_selection(tmp_path: Path) -> None:
    ws = _corpus(tmp_path)
    selector = LongerThanMedian(LongerThanMedian.Config())
    whole = pipeline.curate(ws, CORPUS, selector, budget="10docs", name="short",
                            options=SelectOptions(mode="topk")).plan  # fmt: skip
    within = pipeline.curate(ws, CORPUS, selector, parent="short").plan
    assert within.config_hash != whole.config_hash
    assert pq.read_table(ws.absolute(within.stored["set"])).num_rows == 10
