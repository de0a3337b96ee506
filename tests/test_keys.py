"""One cache key, owned by the base class: what invalidates a signal and what never does.

Selectors declare what they read (`requirements`); the pipeline scores and records it; changing a
corpus a selector reads recomputes exactly the signals that read it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import copy_into, write_jsonl
from ingest_helpers import ingest_catalogued

from gristmill import pipeline
from gristmill.pipeline.curation import Curation
from gristmill.selectors.base import Scorer, Selector, SelectorConfig, SelectorContext
from gristmill.selectors.dedup import DedupConfig, DedupSelector
from gristmill.selectors.nudge import NudgeSelector
from gristmill.selectors.requirements import Dependencies
from gristmill.storage.readers import IngestOptions
from gristmill.storage.workspace import Workspace

WORDS = "flour butter oven bake sugar dough whisk recipe salt pan simmer garlic onion match goal"


def docs(n: int, seed: int) -> list[dict]:
    """Distinct documents of about 30 words (seeded), in two domains."""
    vocab = WORDS.split()
    rows = []
    for i in range(n):
        words = [vocab[(seed * 7 + i * 3 + j * j) % len(vocab)] for j in range(30)]
        rows.append({"text": f"doc {seed} {i} " + " ".join(words), "topic": f"t{i % 2}"})
    return rows


OPTIONS = IngestOptions(domain_field="topic")


def add(tmp_path: Path, corpus: str, name: str, rows: list[dict]) -> Workspace:
    """Ingest one more file into a corpus (a new shard)."""
    path = tmp_path / f"{name}.jsonl"
    write_jsonl(path, rows)
    return ingest_catalogued(tmp_path / "ws", [path], corpus, OPTIONS)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The inputs and workspace ws of corpora pool, other and evals."""
    root = tmp_path_factory.mktemp("keys")
    add(root, "pool", "pool-a", docs(12, 1))
    add(root, "pool", "pool-b", docs(12, 2) + docs(3, 5))  # 3 duplicates of `other`
    add(root, "other", "other-a", docs(3, 5))
    add(root, "evals", "evals-a", docs(2, 1))
    return root


@pytest.fixture
def ws(built: Path, tmp_path: Path) -> Workspace:
    """Corpora pool (two shards), other (one shard) and evals (one shard): the test's own copy."""
    return Workspace(copy_into(built, tmp_path) / "ws")


def curate(ws: Workspace, selector: str, **kwargs) -> Curation:
    """Score only (no selection) with the library pipeline."""
    return pipeline.curate(ws, "pool", selector, **kwargs)


def scored(curation: Curation) -> dict[str, int]:
    """Shards scored per signal: the selector's own, then each requirement by label."""
    counts = {"own": curation.scored}
    counts.update({label: r.scored for label, r in curation.requirements.items()})
    return counts


def test_a_subclass_cannot_define_its_own_key() -> None:
    for method in ("cache_key", "set_key", "signal_key"):
        with pytest.raises(TypeError, match="base class owns the cache key"):
            type("Mine", (Scorer,), {method: lambda self: "x", "score": lambda self, d: d})


def test_a_selector_with_an_in_memory_select_is_refused_where_it_is_defined() -> None:
    # select(candidates) is no longer called: silently ranking by the stored score instead
    # would give a plug-in's users a different selection than its author wrote.
    with pytest.raises(TypeError, match="selection runs as DuckDB queries"):
        type("Mine", (Selector,), {"select": lambda self, c, u, o: [], "score": lambda s, d: d})


def test_a_per_shard_selector_cannot_declare_set_stage_needs(ws: Workspace) -> None:
    from gristmill.selectors.quality import QualitySelector
    from gristmill.selectors.requirements import Setting

    class SeededQuality(QualitySelector):
        def requirements(self, context: SelectorContext) -> list:
            return [Setting("seed", context.seed)]  # stage "set": nothing would key it

    with pytest.raises(TypeError, match="per-shard selector has set-stage requirements"):
        pipeline.curate(ws, "pool", SeededQuality.from_params({}))


def test_a_key_scope_naming_no_field_is_an_error() -> None:
    with pytest.raises(TypeError, match="unknown fields"):
        type("BadConfig", (SelectorConfig,), {"__annotations__": {"a": int}, "a": 1,
                                              "set_fields": frozenset({"b"})})  # fmt: skip


def test_scopes_decide_which_keys_change() -> None:
    def keys(**params) -> tuple[str, str]:
        selector = DedupSelector(DedupConfig(**params))
        return selector.signal_key("shard"), selector.signal_key("set")

    shard, set_ = keys()
    assert keys(memory_limit="1GB") == (shard, set_)  # unkeyed: nothing recomputes
    assert keys(keep="longest")[0] == shard and keys(keep="longest")[1] != set_  # set only
    assert keys(num_perm=128)[0] != shard and keys(num_perm=128)[1] != set_  # both
    # A threshold moves the band cut, so the per-shard band hashes change too.
    assert keys(threshold=0.7)[0] != shard


def test_dependency_order_does_not_matter_and_keys_are_stable_across_processes() -> None:
    selector = DedupSelector(DedupConfig())
    one, two = Dependencies(), Dependencies()
    one.record("set", "a", 1)
    one.record("set", "b", {"x": [1, 2]})
    two.record("set", "b", {"x": [1, 2]})
    two.record("set", "a", 1)
    assert selector.signal_key("set", one) == selector.signal_key("set", two)
    code = (
        "from gristmill.selectors.dedup import DedupSelector, DedupConfig;"
        "print(DedupSelector(DedupConfig()).signal_key('set'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == selector.signal_key("set")


def test_reading_an_undeclared_input_fails_naming_the_selector(tmp_path: Path) -> None:
    context = SelectorContext(Workspace(tmp_path / "ws"), "pool", "target")
    selector = NudgeSelector(NudgeSelector.Config(dim=16))
    context.inputs.owner = selector.name
    with pytest.raises(RuntimeError, match="selector nudge read input 'target' it did not"):
        selector.score_set(context, pipeline_pool(tmp_path))


def pipeline_pool(tmp_path: Path):
    """An empty pool of features, for a score_set that must fail before reading it."""
    from gristmill.selectors.base import PoolFeatures

    path = tmp_path / "features.parquet"
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"doc_id": pa.array([], pa.uint64()),
                             "domain": pa.array([], pa.string()),
                             "vector": pa.array([], pa.list_(pa.float32()))}), path)  # fmt: skip
    return PoolFeatures([path], None, tmp_path)


def test_a_changed_eval_set_rescores_only_decontaminate(ws: Workspace, tmp_path: Path) -> None:
    params = {"eval": "evals", "n": 5, "min_words": 3}
    assert curate(ws, "decontaminate", params=params).scored == 2
    assert curate(ws, "quality").scored == 2
    assert curate(ws, "decontaminate", params=params).scored == 0
    add(tmp_path, "evals", "evals-b", docs(2, 2))
    assert curate(ws, "decontaminate", params=params).scored == 2  # every pool shard
    assert curate(ws, "quality").scored == 0  # reads no eval set: untouched


def test_a_changed_against_corpus_rescores_only_its_new_shard_and_the_set(
    ws: Workspace, tmp_path: Path
) -> None:
    params = {"against": ["other"], "mode": "exact"}
    first = curate(ws, "dedup", params=params)
    assert scored(first) == {"own": 2, "against:other": 1}
    again = curate(ws, "dedup", params=params)
    assert scored(again) == {"own": 0, "against:other": 0}
    assert again.plan.config_hash == first.plan.config_hash
    add(tmp_path, "other", "other-b", docs(2, 1))
    changed = curate(ws, "dedup", params=params)
    assert scored(changed) == {"own": 0, "against:other": 1}  # the new shard only
    assert changed.features.config_hash == first.features.config_hash
    assert changed.plan.config_hash != first.plan.config_hash  # the set signal recomputed


def test_a_changed_target_rescores_what_reads_it(ws: Workspace, tmp_path: Path) -> None:
    nudge = {"dim": 32}
    first = pipeline.curate(ws, "pool", "nudge", params=nudge, target="other")
    assert scored(first) == {"own": 2, "target": 1}
    dsir = pipeline.curate(ws, "pool", "dsir", params={"num_buckets": 64}, target="other")
    assert scored(dsir) == {"own": 2, "pool_counts": 2}
    add(tmp_path, "other", "other-b", docs(2, 3))
    changed = pipeline.curate(ws, "pool", "nudge", params=nudge, target="other")
    assert scored(changed) == {"own": 0, "target": 1}  # pool embeddings reused
    assert changed.features.config_hash == first.features.config_hash
    assert changed.plan.config_hash != first.plan.config_hash
    dsir_changed = pipeline.curate(ws, "pool", "dsir", params={"num_buckets": 64}, target="other")
    # Every pool shard's weights depend on the target; the pool's bucket counts do not.
    assert scored(dsir_changed) == {"own": 2, "pool_counts": 0}
    assert curate(ws, "quality").scored == 2  # first run of quality
    assert curate(ws, "quality").scored == 0


def test_token_counts_for_coreset_are_a_reused_requirement(ws: Workspace) -> None:
    first = curate(ws, "coreset", params={"dim": 16}, budget="200tokens", name="c1")
    assert first.requirements["tokens"].scored == 0  # the budget's own token counts came first
    assert first.sizes_scored == 2
    second = curate(ws, "coreset", params={"dim": 16, "method": "deft"}, budget="200tokens")
    assert scored(second) == {"own": 0, "tokens": 0}
