"""Selectors that rank on stored columns (language, learnability, cartography): the members and
their order on a tiny pool, as the in-memory select they replaced gave them (values recorded
from it); NaN and NULL scores, ties, budgets, Gumbel, thresholds and domain quotas."""

from __future__ import annotations

import math
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from gristmill.selectors.base import Selector
from gristmill.selectors.cartography import CartographySelector
from gristmill.selectors.language import LanguageSelector
from gristmill.selectors.learnability import LearnabilitySelector
from gristmill.selectors.selection import CandidatePool, SelectOptions

NAN = math.nan
# Ties in score, confidence and variability (broken by doc_id); loss_base 0 gives -inf (kept,
# last), NaN and NULL losses no score (never selected).
ROWS: dict[str, list[Any]] = {
    "doc_id": [40, 7, 23, 11, 5, 31, 18, 2, 29, 14, 9, 36],
    "domain": ["a", "b", "a", "a", "b", "b", "a", "b", "a", "b", "a", "b"],
    "n_bytes": [120, 80, 200, 50, 150, 90, 60, 110, 70, 130, 100, 40],
    "score": [0.91, 0.55, 0.91, 0.30, 0.99, 0.72, 0.64, 0.80, 0.45, 0.91, 0.12, 0.66],
    "passed": [True, False, True, False, True, True, True, True, False, True, False, True],
    "loss_base": [2.0, 3.0, 2.5, NAN, 1.5, 2.0, 0.0, 4.0, 2.2, 3.0, 1.0, 2.0],
    "loss_ref": [1.0, 2.7, 1.25, 1.0, NAN, 1.0, 0.5, 2.0, None, 2.7, 0.2, 1.5],
    "confidence": [0.9, 0.2, 0.55, 0.2, 0.75, 0.4, 0.95, 0.6, 0.3, 0.8, 0.5, 0.65],
    "variability": [0.05, 0.3, 0.25, 0.3, 0.1, 0.35, 0.02, 0.2, 0.3, 0.12, 0.28, 0.15],
}
GUMBEL = {"mode": "gumbel", "seed": 3, "temperature": 0.5}
QUOTAS = {"mode": "topk", "domain_weights": {"a": 2, "b": 1}}
QUOTAS_GUMBEL = {"mode": "gumbel", "seed": 1, "domain_weights": {"a": 1, "*": 1}}


def chosen(selector: Selector, units: float | None, options: dict[str, Any]) -> list[int]:
    """The doc_ids `selector` takes from ROWS (size: n_bytes), in rank order."""
    con = duckdb.connect()
    table = pa.table({**ROWS, "doc_id": pa.array(ROWS["doc_id"], pa.uint64()),
                      "size": pa.array(ROWS["n_bytes"], pa.float64())})  # fmt: skip
    con.register("loaded", table)
    con.execute("create table candidates as select * from loaded")
    selector.select_members(CandidatePool(con), units, SelectOptions(**options))
    return [d for (d,) in con.execute("select doc_id from chosen order by rank").fetchall()]


@pytest.mark.parametrize(
    ("units", "options", "expected"),
    [
        (None, {}, [5, 14, 23, 40, 2, 31, 36, 18]),  # threshold 0.0 by default
        (500.0, {"mode": "topk"}, [5, 14, 23]),
        (None, {"mode": "threshold", "threshold": 0.6}, [5, 14, 23, 40, 2, 31, 36, 18]),
        (800.0, {"mode": "threshold", "threshold": 0.1}, [5, 14, 23, 40, 2, 31]),
        (700.0, GUMBEL, [23, 5, 36, 18, 40, 31]),
        (600.0, QUOTAS, [5, 23, 40, 18]),
        (None, QUOTAS_GUMBEL, [18, 23, 5, 2, 40, 14, 36]),
    ],
)
def test_language_takes_only_documents_that_passed(
    units: float | None, options: dict[str, Any], expected: list[int]
) -> None:
    assert chosen(LanguageSelector.from_params({}), units, options) == expected


@pytest.mark.parametrize(
    ("normalize", "units", "options", "expected"),
    [
        (True, None, {}, [9, 2, 23, 31, 40, 36, 7, 14, 18]),
        (True, 500.0, {}, [9, 2, 23, 31]),
        (True, None, {"mode": "threshold", "threshold": 0.6}, [9]),
        (True, 800.0, {"mode": "threshold", "threshold": 0.1}, [9, 2, 23, 31, 40, 36]),
        (True, 700.0, GUMBEL, [23, 7, 36, 40, 31, 9]),
        (True, 600.0, QUOTAS, [9, 2, 23, 31]),
        (True, None, QUOTAS_GUMBEL, [23, 2, 7, 9, 40, 14, 36, 31, 18]),
        (False, None, {}, [2, 23, 31, 40, 9, 36, 7, 14, 18]),
        (False, 500.0, {}, [2, 23, 31]),
        (False, None, {"mode": "threshold", "threshold": 0.6}, [2, 23, 31, 40, 9]),
        (False, 700.0, GUMBEL, [23, 2, 7, 40, 36, 31]),
        (False, 600.0, QUOTAS, [2, 23, 31, 40]),
        (False, None, QUOTAS_GUMBEL, [2, 23, 18, 40, 7, 9, 14, 31, 36]),
    ],
)
def test_learnability_ranks_by_the_stored_losses(
    normalize: bool, units: float | None, options: dict[str, Any], expected: list[int]
) -> None:
    selector = LearnabilitySelector.from_params({"normalize": normalize})
    assert chosen(selector, units, options) == expected


@pytest.mark.parametrize(
    ("region", "units", "options", "expected"),
    [
        ("ambiguous", 500.0, {}, [31, 7, 11, 29, 9]),
        ("ambiguous", 800.0, {"mode": "threshold", "threshold": 0.1},
         [31, 7, 11, 29, 9, 23, 2, 36]),
        ("ambiguous", 700.0, GUMBEL, [7, 23, 5, 36, 18, 31]),
        ("ambiguous", 600.0, QUOTAS, [31, 7, 11, 29, 9]),
        ("hard", 500.0, {}, [7, 11, 29, 31, 9]),
        ("hard", 800.0, {"mode": "threshold", "threshold": 0.1}, []),
        ("hard", 700.0, GUMBEL, [7, 23, 5, 36, 31, 18, 11]),
        ("hard", 600.0, QUOTAS, [7, 11, 29, 31, 9]),
        ("easy", 500.0, {}, [18, 40, 14, 5, 36]),
        ("easy", 800.0, {"mode": "threshold", "threshold": 0.1}, [18, 40, 14, 5, 36, 2]),
        ("easy", 700.0, GUMBEL, [5, 23, 18, 7, 36, 40]),
        ("easy", 600.0, QUOTAS, [18, 40, 14, 23]),
    ],
)  # fmt: skip
def test_cartography_keeps_a_region_under_the_budget(
    region: str, units: float | None, options: dict[str, Any], expected: list[int]
) -> None:
    selector = CartographySelector.from_params({"region": region})
    assert chosen(selector, units, options) == expected


def test_cartography_needs_a_budget() -> None:
    selector = CartographySelector.from_params({})
    with pytest.raises(ValueError, match="cartography keeps a region under a budget"):
        chosen(selector, None, {})
