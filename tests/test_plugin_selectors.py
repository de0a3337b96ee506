"""Adding a selector is one file: two plug-ins, a per-shard selector and a set selector with a
requirement and an `inspect` section, installed through the entry-point group, get caching,
requirements and explanations from gristmill with no change to it (README: Write a selector)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl
from ingest_helpers import ingest_catalogued
from pydantic import Field

from gristmill import pipeline
from gristmill.selectors import available
from gristmill.selectors.base import Section, Selector, SelectorConfig, SetSelector, Table
from gristmill.selectors.featurize import VECTOR_COLUMN, Embedder, EmbedderConfig, vectors_of
from gristmill.selectors.requirements import ScoredCorpus
from gristmill.storage.readers import IngestOptions


class LengthConfig(SelectorConfig):
    cap: int = Field(200, ge=1)  # keys the per-shard signal (the default)
    batch: int = 256
    unkeyed_fields = frozenset({"batch"})  # changes no result: never recomputes


class LengthSelector(Selector):
    """Longer documents first, up to a cap (a test plug-in)."""

    name: ClassVar[str] = "test_length"
    Config = LengthConfig

    def score(self, documents: pa.Table) -> pa.Table:
        """Words per document, capped."""
        words = [min(len(t.split()), self.config.cap) for t in documents["text"].to_pylist()]
        return pa.table({"doc_id": documents["doc_id"], "score": pa.array(words, pa.float64())})


class NearTargetConfig(SelectorConfig):
    dim: int = 64  # keys the embeddings
    center: bool = True
    set_fields = frozenset({"center"})  # keys only the set signal


class NearTargetSelector(SetSelector):
    """Documents closest to the target's mean embedding (a test plug-in)."""

    name: ClassVar[str] = "test_near_target"
    Config = NearTargetConfig
    requires_target = True

    def embedder(self) -> Embedder:
        """The hashed-n-gram embedder both corpora are scored with."""
        return Embedder(EmbedderConfig(dim=self.config.dim))

    def requirements(self, context: Any) -> list:
        """The target's embeddings, scored by the pipeline (cached, keyed, on the run's map)."""
        return [ScoredCorpus("target", context.target, self.embedder())]

    def score(self, documents: pa.Table) -> pa.Table:
        """The pool's embeddings, per shard."""
        return self.embedder().score(documents)

    def score_set(self, context: Any, pool: Any) -> pa.Table:
        """Similarity to the target's mean vector."""
        table = pool.read([VECTOR_COLUMN])
        files = context.inputs.signal("target").files
        target = np.concatenate([vectors_of(pq.read_table(f)[VECTOR_COLUMN]) for f in files])
        center = target.mean(axis=0) if self.config.center else target[0]
        scores = vectors_of(table[VECTOR_COLUMN]) @ center
        return pa.table({"doc_id": table["doc_id"], "score": pa.array(scores, pa.float64())})

    def explain(self, view: Any) -> list[Section]:
        """The three kept documents closest to the target."""
        rows = view.rows(
            f"select s.doc_id, s.score from {view.signal} where s.doc_id in "
            f"(select d.doc_id from {view.candidates} where {view.kept}) "
            "order by s.score desc, s.doc_id limit 3"
        )
        return [Section("closest", rows, [Table("closest to the target", rows)])]


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both selectors installed as a plug-in distribution's entry points."""
    dist = tmp_path / "plugins" / "gm_plugin_selectors-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: gm-plugin-selectors\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        "[gristmill.selectors]\n"
        f"test_length = {__name__}:LengthSelector\n"
        f"test_near_target = {__name__}:NearTargetSelector\n"
    )
    monkeypatch.syspath_prepend(str(dist.parent))


def rows(prefix: str, n: int, topic: str) -> list[dict]:
    """n distinct documents about one topic, of varied length."""
    words = {"baking": "flour butter oven dough sugar whisk", "football": "goal match pitch team"}
    return [{"text": f"{prefix} {i} " + " ".join([words[topic]] * (1 + i % 4))} for i in range(n)]


def test_plugins_get_caching_requirements_and_inspect(tmp_path: Path, plugins: None) -> None:
    assert {"test_length", "test_near_target"} <= set(available())
    options = IngestOptions()
    for name, data in [("pool-a", rows("a", 10, "baking") + rows("b", 10, "football")),
                       ("pool-b", rows("c", 10, "football"))]:  # fmt: skip
        write_jsonl(tmp_path / f"{name}.jsonl", data)
        ws = ingest_catalogued(tmp_path / "ws", [tmp_path / f"{name}.jsonl"], "pool", options)
    write_jsonl(tmp_path / "target-a.jsonl", rows("t", 5, "baking"))
    ingest_catalogued(tmp_path / "ws", [tmp_path / "target-a.jsonl"], "target", options)

    # A per-shard plug-in: scored once, reused, and an unkeyed setting recomputes nothing.
    first = pipeline.curate(ws, "pool", "test_length", name="long", budget="5docs")
    assert (first.scored, first.reused) == (2, 0) and first.record["n_selected"] == 5
    again = pipeline.curate(ws, "pool", "test_length", params={"batch": 8}, name="long2")
    assert (again.scored, again.reused) == (0, 2)
    capped = pipeline.curate(ws, "pool", "test_length", params={"cap": 3})
    assert capped.scored == 2  # a keyed setting is another signal

    # A set plug-in with a requirement: the target is scored by the pipeline, then reused.
    near = pipeline.curate(ws, "pool", "test_near_target", target="target", name="near",
                           budget="10docs")  # fmt: skip
    assert near.requirements["target"].scored == 1 and near.scored == 2
    kept = pq.read_table(ws.members_path("near"))["doc_id"].to_pylist()
    pool = pa.concat_tables(
        pq.read_table(f) for f in sorted(ws.corpus_dir("pool").glob("*.parquet"))
    )
    texts = dict(zip(pool["doc_id"].to_pylist(), pool["text"].to_pylist(), strict=True))
    assert sorted(texts[d].split()[0] for d in kept) == ["a"] * 10  # the baking documents
    again = pipeline.curate(ws, "pool", "test_near_target", target="target", name="near-again",
                            budget="10docs")  # fmt: skip
    assert again.requirements["target"].scored == 0 and again.scored == 0
    assert pq.read_table(ws.members_path("near-again"))["doc_id"].to_pylist() == kept
    # A set-only setting keeps every shard signal; a new target shard is the only one scored.
    uncentered = pipeline.curate(ws, "pool", "test_near_target", target="target",
                                 params={"center": False})  # fmt: skip
    assert uncentered.scored == 0 and uncentered.requirements["target"].scored == 0
    assert uncentered.plan.config_hash != near.plan.config_hash
    write_jsonl(tmp_path / "target-b.jsonl", rows("u", 3, "baking"))
    ingest_catalogued(tmp_path / "ws", [tmp_path / "target-b.jsonl"], "target", options)
    grown = pipeline.curate(ws, "pool", "test_near_target", target="target")
    assert grown.requirements["target"].scored == 1 and grown.scored == 0
    assert grown.plan.config_hash != near.plan.config_hash

    # Its explanation reaches inspect with no change to storage or the CLI.
    result = pipeline.inspect_selection(ws, "near")
    assert [s["key"] for s in result["sections"]] == ["closest"]
    assert len(result["closest"]) == 3 and {r["doc_id"] for r in result["closest"]} <= set(kept)
