"""Budgets, ranking, threshold and Gumbel-top-k selection, per-domain quotas."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gristmill.errors import InputError
from gristmill.pipeline.curation import run_selection
from gristmill.selectors.budget import Budget
from gristmill.selectors.quality import QualitySelector
from gristmill.selectors.selection import (
    CandidatePool,
    Ranking,
    SelectOptions,
    domain_quotas,
    gumbel,
    select,
    select_ranked,
    take_prefix,
    uniform,
)


@pytest.mark.parametrize(
    ("text", "unit", "value"),
    [
        ("0.2", "fraction", 0.2),
        (".5", "fraction", 0.5),
        ("20%", "fraction", 0.2),
        ("1.0", "fraction", 1.0),
        ("10000docs", "docs", 10000),
        ("10kdocs", "docs", 10000),
        ("2.5Mdocs", "docs", 2_500_000),
        ("10000", "docs", 10000),
        ("5MB", "bytes", 5_000_000),
        ("5mb", "bytes", 5_000_000),
        ("2MiB", "bytes", 2 * 2**20),
        ("1GB", "bytes", 1e9),
        ("100B", "bytes", 100),
        ("2Mtokens", "tokens", 2_000_000),
        ("500ktokens", "tokens", 500_000),
        ("1Btokens", "tokens", 1e9),
        ("1_000docs", "docs", 1000),
    ],
)
def test_budget_parse(text: str, unit: str, value: float) -> None:
    budget = Budget.parse(text)
    assert budget.unit == unit
    assert budget.value == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "abc", "0", "-1", "1.5", "120%", "5 zillion", "3Xtokens"])
def test_budget_rejects_nonsense(text: str) -> None:
    with pytest.raises(InputError, match="budget"):
        Budget.parse(text)


def test_fraction_budget_counts_documents() -> None:
    assert Budget.parse("0.25").units(400) == 100
    assert Budget.parse("0.25").counts == "docs"
    assert Budget.parse("5MB").units(400) == 5_000_000


def test_topk_ranks_by_score_then_doc_id() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.1])
    ids = np.array([40, 30, 20, 10], dtype=np.uint64)
    chosen = select_ranked(scores, ids, np.ones(4), 3, "topk")
    assert chosen.tolist() == [1, 2, 0]  # 0.9, then the 0.5 tie broken by smaller doc_id


def test_prefix_never_exceeds_byte_budget() -> None:
    order = np.array([0, 1, 2, 3])
    sizes = np.array([40.0, 30.0, 50.0, 10.0])
    assert take_prefix(order, sizes, 70).tolist() == [0, 1]
    assert take_prefix(order, sizes, 69).tolist() == [0]
    assert take_prefix(order, sizes, 1000).tolist() == [0, 1, 2, 3]


def test_threshold_mode_keeps_scores_at_or_above() -> None:
    scores = np.array([1.0, 0.5, 1.0, 0.99])
    ids = np.arange(4, dtype=np.uint64)
    chosen = select_ranked(scores, ids, np.ones(4), None, "threshold", threshold=1.0)
    assert sorted(chosen.tolist()) == [0, 2]
    capped = select_ranked(scores, ids, np.ones(4), 1, "threshold", threshold=0.5)
    assert capped.tolist() == [0]


def test_nan_scores_are_never_selected_by_topk() -> None:
    scores = np.array([np.nan, 0.1, np.nan])
    chosen = select_ranked(scores, np.arange(3, dtype=np.uint64), np.ones(3), 3, "topk")
    assert chosen.tolist() == [1]


def test_gumbel_noise_is_a_function_of_seed_and_doc_id_only() -> None:
    ids = np.arange(1000, dtype=np.uint64)
    shuffled = np.random.default_rng(1).permutation(ids)
    noise = dict(zip(ids.tolist(), gumbel(ids, 7).tolist(), strict=True))
    again = dict(zip(shuffled.tolist(), gumbel(shuffled, 7).tolist(), strict=True))
    assert noise == again
    assert not np.allclose(gumbel(ids, 7), gumbel(ids, 8))
    u = uniform(np.arange(100_000, dtype=np.uint64), 3)
    assert u.min() > 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01


def test_gumbel_top_k_samples_in_proportion_to_exp_score() -> None:
    # Two groups, log-weights 0 and log(3): sampled 1 at a time over many seeds, the heavy
    # group should win about 3 times in 4 (P = w_i / sum w).
    scores = np.array([0.0, np.log(3.0)])
    ids = np.array([11, 22], dtype=np.uint64)
    wins = sum(
        select_ranked(scores, ids, np.ones(2), 1, "gumbel", seed=s)[0] == 1 for s in range(4000)
    )
    assert 0.72 < wins / 4000 < 0.78


def test_gumbel_selection_is_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(0)
    scores, ids = rng.normal(size=500), np.arange(500, dtype=np.uint64)
    first = select_ranked(scores, ids, np.ones(500), 100, "gumbel", seed=5)
    again = select_ranked(scores, ids, np.ones(500), 100, "gumbel", seed=5)
    other = select_ranked(scores, ids, np.ones(500), 100, "gumbel", seed=6)
    assert first.tolist() == again.tolist()
    assert first.tolist() != other.tolist()


def test_domain_quotas_split_the_budget() -> None:
    domains = np.array(["a"] * 6 + ["b"] * 6 + ["c"] * 6)
    quotas = domain_quotas(np.unique(domains), 9, {"a": 2, "b": 1})
    assert quotas == {"a": 6, "b": 3}
    with_default = domain_quotas(np.unique(domains), 9, {"a": 1, "*": 1})
    assert with_default == {"a": 3, "b": 3, "c": 3}
    with pytest.raises(ValueError, match="no weight"):
        domain_quotas(np.unique(domains), 9, {"z": 1})


def test_select_with_domain_weights_honours_quotas() -> None:
    domains = np.array(["a"] * 10 + ["b"] * 10)
    scores = np.concatenate([np.linspace(1, 2, 10), np.linspace(3, 4, 10)])  # b scores higher
    ids = np.arange(20, dtype=np.uint64)
    options = SelectOptions(domain_weights={"a": 1, "b": 1})
    chosen = select(scores, ids, np.ones(20), domains, 6, "topk", options)
    picked = domains[chosen]
    assert (picked == "a").sum() == 3 and (picked == "b").sum() == 3
    assert chosen.tolist()[:3] == [19, 18, 17]  # merged back in score order


def _pool(scores: np.ndarray, ids: np.ndarray, sizes: np.ndarray, domains: np.ndarray):
    con = duckdb.connect()
    columns = {"doc_id": pa.array(ids, pa.uint64()), "score": scores, "size": sizes,
               "domain": domains.astype(str).tolist(), "n_bytes": sizes.astype(int)}  # fmt: skip
    table = pa.table(columns)
    con.register("loaded", table)
    con.execute("create table candidates as select * from loaded")
    return CandidatePool(con)


def _random_candidates(n: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    scores = np.round(rng.normal(size=n), 1)  # many ties, broken by doc_id
    scores[rng.random(n) < 0.05] = np.nan
    scores[rng.random(n) < 0.05] = -0.0
    ids = rng.permutation(np.arange(10 * n, dtype=np.uint64))[:n]
    sizes = rng.integers(1, 500, n).astype(np.float64)
    domains = rng.choice(np.array(["a", "b", "c", "d"]), n)
    return scores, ids, sizes, domains


@pytest.mark.parametrize("mode", ["topk", "threshold", "gumbel"])
@pytest.mark.parametrize("weights", [None, {"a": 2, "b": 1, "*": 0.5}])
@pytest.mark.parametrize("bytes_budget", [None, 20_000.0, 1e9])
def test_query_selection_equals_the_numpy_reference(
    mode: str, weights: dict[str, float] | None, bytes_budget: float | None
) -> None:
    scores, ids, sizes, domains = _random_candidates(600, 3)
    options = SelectOptions(threshold=0.3, temperature=0.7, seed=11, domain_weights=weights)
    reference = select(scores, ids, sizes, domains, bytes_budget, mode, options)
    pool = _pool(scores, ids, sizes, domains)
    pool.take(Ranking(), bytes_budget, mode, options)
    chosen = pool.con.execute("select doc_id, rank from chosen order by rank").fetchall()
    assert [d for d, _ in chosen] == ids[reference].tolist()
    assert [r for _, r in chosen] == list(range(len(reference)))


def test_query_selection_takes_from_the_rest_by_a_computed_score() -> None:
    scores, ids, sizes, domains = _random_candidates(300, 4)
    pool = _pool(scores, ids, sizes, domains)
    options = SelectOptions(seed=2)
    pool.take(Ranking(score="-score", where="domain <> 'd'"), 5000.0, "gumbel", options)
    first = pool.count("chosen")
    pool.take(Ranking(), 3000.0, "topk", options)  # a second quota: from those not yet chosen
    taken = [d for (d,) in pool.con.execute("select doc_id from chosen order by rank").fetchall()]
    kept = domains != "d"
    expected = ids[kept][select_ranked(-scores[kept], ids[kept], sizes[kept], 5000.0, "gumbel",
                                       seed=2)].tolist()  # fmt: skip
    assert taken[:first] == expected
    rest = ~np.isin(ids, expected)
    expected_rest = ids[rest][select_ranked(scores[rest], ids[rest], sizes[rest], 3000.0, "topk")]
    assert taken[first:] == expected_rest.tolist()
    assert len(set(taken)) == len(taken)


def test_selection_query_writes_members_and_names_a_bad_memory_limit(tmp_path) -> None:
    query = (
        "select range::ubigint as doc_id, (range % 7)::double as score, 'a' as domain, "
        "10::bigint as n_bytes, 1.0::double as size from range(50)"
    )
    members = tmp_path / "selections" / "s" / "members.parquet"
    selector = QualitySelector.from_params({})
    chosen = run_selection(query, members, selector, Budget.parse("10docs"),
                           SelectOptions(mode="topk"))  # fmt: skip
    assert (chosen.n_candidates, chosen.n_selected, chosen.bytes_selected) == (50, 10, 100)
    table = pq.read_table(members)
    assert table["doc_id"].to_pylist() == [6, 13, 20, 27, 34, 41, 48, 5, 12, 19]
    assert table["rank"].to_pylist() == list(range(10))
    assert sorted(p.name for p in (tmp_path / "selections").iterdir()) == ["s"]  # scratch gone
    with pytest.raises(InputError, match="memory_limit 'lots'"):
        run_selection(query, members, selector, None, SelectOptions(memory_limit="lots"))
