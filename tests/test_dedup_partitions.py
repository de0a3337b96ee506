"""Dedup in stages: band-hash partitions as work units give the clusters of one whole pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import PROSE

from gristmill.errors import InputError
from gristmill.pipeline.map import ThreadMap, serial_map
from gristmill.selectors.dedup import (
    DedupSelector,
    EdgeFile,
    banding,
    check_unit,
    cluster_pool,
    default_partitions,
    edge_unit,
)

WORDS = sorted(set(PROSE.lower().replace(",", "").replace(".", "").replace(";", "").split()))


def _texts(rng: np.random.Generator, families: int, per_family: int) -> list[str]:
    """Families of edited copies (0-40% of words replaced): near, borderline and far members."""
    texts = []
    for _ in range(families):
        base = list(rng.choice(WORDS, 80))
        for copy in range(per_family):
            words = list(base)
            rate = [0.0, 0.02, 0.05, 0.1, 0.2, 0.4][copy % 6]
            for i in rng.choice(len(words), int(rate * len(words)), replace=False):
                words[i] = f"w{rng.integers(1_000_000)}"
            texts.append(" ".join(words))
    return [*texts, "", "...", "Hi.", "hi"]  # empties and exact short copies


def _features(tmp: Path, name: str, texts: list[str], first_id: int, config, shards: int):
    files = []
    order = np.arange(len(texts))
    for part in np.array_split(order, shards):
        table = pa.table(
            {
                "doc_id": pa.array(part + first_id, pa.uint64()),
                "text": [texts[i] for i in part],
                "source": [f"{name}.jsonl"] * len(part),
                "source_line": pa.array(part, pa.int64()),
                "n_bytes": pa.array([len(texts[i]) for i in part], pa.int64()),
            }
        )
        path = tmp / f"{name}-{part[0]}.parquet"
        pq.write_table(DedupSelector(config).score(table), path)
        files.append(path)
    return files


def _reference(sources: list[list[Path]], config) -> dict[int, int | None]:
    """What the one-pass clustering means, in plain Python: pool doc_id -> duplicate_of."""
    rows = []
    for rank, files in enumerate(sources):
        for path in files:
            for row in pq.read_table(path).to_pylist():
                rows.append((rank, row["source"], row["source_line"], row["doc_id"], row))
    rows.sort(key=lambda r: r[:4])  # keep=first: corpus, source order, doc_id
    parent = list(range(len(rows)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def link(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)

    buckets: dict[tuple, int] = {}
    for node, (*_, row) in enumerate(rows):
        keys = [("exact", row["content_hash"])] + [(b, h) for b, h in enumerate(row["bands"])]
        for key in keys:
            root = buckets.setdefault(key, node)
            if root == node:
                continue
            a = np.frombuffer(rows[root][4]["signature"], np.uint32)
            b = np.frombuffer(row["signature"], np.uint32)
            if key[0] == "exact" or (a == b).mean() >= config.threshold:
                link(node, root)
    return {
        r[3]: (rows[find(n)][3] if find(n) != n else None)
        for n, r in enumerate(rows)
        if r[0] == len(sources) - 1
    }


def test_same_clusters_on_1_4_and_16_partitions(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    params = {"threshold": 0.6, "num_perm": 128, "shingle_size": 2}
    config = DedupSelector.from_params(params).config
    older = _features(tmp_path, "older", _texts(rng, 4, 3), 10_000, config, 1)
    pool = _features(tmp_path, "pool", _texts(rng, 12, 6), 0, config, 2)
    sources = [("older", older, None), ("pool", pool, None)]
    expected = _reference([older, pool], config)
    assert sum(v is not None for v in expected.values()) > 20
    results, candidates = [], {}
    for partitions in (1, 4, 16):
        recorded: list[EdgeFile] = []
        checked: list[EdgeFile] = []

        def recording_map(fn, units, _recorded=recorded, _checked=checked):
            for result in ThreadMap(2)(fn, units):
                if fn is edge_unit:
                    _recorded.append(result)
                if fn is check_unit:
                    _checked.append(result)
                yield result

        split = config.model_copy(update={"partitions": partitions})
        table = pq.read_table(
            cluster_pool(sources, split, tmp_path / f"s{partitions}", recording_map)
        )  # type: ignore[arg-type]
        results.append(table.to_pylist())
        assert len(recorded) == partitions  # every partition has buckets at this size
        assert len({r.path for r in recorded}) == partitions  # each writes its own file
        candidates[partitions] = sum(r.candidates for r in recorded)
        # verification (per feature file holding roots) sees each distinct pair once, whatever
        # the partitions, and rejects some
        assert {r.partition for r in checked} <= set(range(len(older) + len(pool)))
        assert sum(r.candidates for r in checked) > sum(r.edges for r in checked) > 0
        verified = sum(r.candidates for r in checked)
        assert verified <= candidates[partitions]
        if partitions == 1:
            first_verified = verified
        assert verified == first_verified
    assert results[0] == results[1] == results[2]
    assert {r["doc_id"]: r["duplicate_of"] for r in results[0]} == expected
    assert candidates[1] <= candidates[4] <= candidates[16]  # a pair may link in several parts
    older_wins = [r for r in results[0] if r["duplicate_corpus"] == "older"]
    assert older_wins  # the older corpus's copies keep their place as representatives


def test_partitions_setting_and_default(tmp_path: Path) -> None:
    bands = banding(DedupSelector.from_params({}).config)[0]  # type: ignore[arg-type]
    assert default_partitions(1000, bands) == 1
    assert default_partitions(10_000_000, bands) == 5
    assert default_partitions(10**12, bands) == 4096
    with pytest.raises(InputError, match="partitions"):
        DedupSelector.from_params({"partitions": 0})
    # the setting changes no result, so it keys nothing
    plain, split = DedupSelector.from_params({}), DedupSelector.from_params({"partitions": 8})
    assert plain.signal_key("set") == split.signal_key("set")
    config = DedupSelector.from_params({"mode": "exact", "partitions": 4}).config
    files = _features(tmp_path, "pool", ["a b", "A, b!", "c"], 0, config, 2)
    table = pq.read_table(cluster_pool([("pool", files, None)], config, tmp_path / "s", serial_map))  # type: ignore[arg-type]
    assert table["duplicate_of"].to_pylist() == [None, 0, None]
