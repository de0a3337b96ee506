"""Selection under a budget: top-k, threshold and Gumbel-top-k, with per-domain quotas.

A selection runs as DuckDB queries over the candidates (`CandidatePool`), so no candidate is
loaded into Python and memory stays under DuckDB's `memory_limit` (it spills to a scratch
directory). Ties break by doc_id, and the Gumbel noise of a document depends only on
(seed, doc_id), so a selection does not depend on the order of shards or the number of workers.

The numpy functions below (`rank`, `take_prefix`, `select_ranked`, `select`) are the reference
the queries are tested against; the noise (`gumbel`) is the one production computes, inside the
query, so the keys are bit for bit the reference's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["topk", "threshold", "gumbel"]
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


class SelectOptions(BaseModel):
    """How to turn scores into a selection (independent of the selector)."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode | None = Field(None, description="default: the selector's own default")
    threshold: float | None = Field(None, description="threshold mode: keep score >= this")
    temperature: float = Field(1.0, gt=0, description="gumbel mode: scores are log-weights / T")
    seed: int = Field(0, description="seed for Gumbel noise and sampling")
    domain_weights: dict[str, float] | None = Field(
        None, description="split the budget across domains in these proportions ('*' = others)"
    )
    tokenizer: str | None = Field(
        None, description="token budgets: a local Hugging Face tokenizer; default: word pieces"
    )
    memory_limit: str = Field(
        "2GB", description="DuckDB memory limit while selecting (beyond it, spills to disk)"
    )


def splitmix64(values: np.ndarray) -> np.ndarray:
    """A fast, well-mixed 64-bit hash of each value (vectorised)."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniform(doc_ids: np.ndarray, seed: int) -> np.ndarray:
    """A uniform (0, 1) number per document, fixed by (seed, doc_id)."""
    with np.errstate(over="ignore"):
        mixed = splitmix64(doc_ids.astype(np.uint64) ^ splitmix64(np.array([seed], np.uint64)))
    return ((mixed >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def gumbel(doc_ids: np.ndarray, seed: int) -> np.ndarray:
    """Gumbel(0, 1) noise per document, fixed by (seed, doc_id)."""
    return -np.log(-np.log(uniform(doc_ids, seed)))


def rank(scores: np.ndarray, doc_ids: np.ndarray) -> np.ndarray:
    """Indices by descending score, ties by ascending doc_id; NaN scores last."""
    safe = np.where(np.isnan(scores), -np.inf, scores)
    return np.lexsort((doc_ids, -safe))


def take_prefix(order: np.ndarray, sizes: np.ndarray, units: float) -> np.ndarray:
    """The longest prefix of `order` whose sizes sum to at most `units`."""
    total = np.cumsum(sizes[order], dtype=np.float64)
    return order[: int(np.searchsorted(total, units + 1e-9, side="right"))]


def select_ranked(
    scores: np.ndarray,
    doc_ids: np.ndarray,
    sizes: np.ndarray,
    units: float | None,
    mode: Mode,
    threshold: float | None = None,
    temperature: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """Indices of the selected documents in rank order (best first)."""
    keys = scores.astype(np.float64)
    if mode == "gumbel":
        keys = keys / temperature + gumbel(doc_ids, seed)
    order = rank(keys, doc_ids)
    if mode == "threshold":
        if threshold is None:
            raise ValueError("threshold mode needs a threshold")
        order = order[scores[order] >= threshold]
    else:
        order = order[~np.isnan(scores[order])]
    return order if units is None else take_prefix(order, sizes, units)


def domain_quotas(
    present_domains: Iterable[str], units: float, weights: dict[str, float]
) -> dict[str, float]:
    """Split a budget across the domains present, in proportion to their weights."""
    present = {str(d) for d in present_domains}
    default = weights.get("*", 0.0)
    chosen = {d: weights.get(d, default) for d in present}
    chosen = {d: w for d, w in chosen.items() if w > 0}
    total = sum(chosen.values())
    if total <= 0:
        raise ValueError("domain_weights give no weight to any domain present in the candidates")
    return {d: units * w / total for d, w in chosen.items()}


def select(
    scores: np.ndarray,
    doc_ids: np.ndarray,
    sizes: np.ndarray,
    domains: np.ndarray,
    units: float | None,
    mode: Mode,
    options: SelectOptions,
) -> np.ndarray:
    """Selected indices in rank order, honouring per-domain quotas when weights are given
    (the reference `CandidatePool.take` is tested against)."""
    if not options.domain_weights:
        return select_ranked(
            scores,
            doc_ids,
            sizes,
            units,
            mode,
            options.threshold,
            options.temperature,
            options.seed,
        )
    quota_units = units if units is not None else float(sizes.sum())
    quotas = domain_quotas(np.unique(domains), quota_units, options.domain_weights)
    picked = []
    for domain, quota in sorted(quotas.items()):
        members = np.flatnonzero(domains == domain)
        local = select_ranked(
            scores[members], doc_ids[members], sizes[members], quota, mode,
            options.threshold, options.temperature, options.seed,
        )  # fmt: skip
        picked.append(members[local])
    chosen = np.concatenate(picked) if picked else np.array([], dtype=np.int64)
    keys = scores[chosen].astype(np.float64)
    if mode == "gumbel":
        keys = keys / options.temperature + gumbel(doc_ids[chosen], options.seed)
    return chosen[rank(keys, doc_ids[chosen])]


GUMBEL_SQL = "gristmill_gumbel"  # the query's name for `gumbel` (doc_id, seed) -> noise
# The budget's float slack, as take_prefix has it.
PREFIX_SLACK = 1e-9


def _gumbel_batch(doc_ids: pa.Array, seeds: pa.Array) -> pa.Array:
    """`gumbel` over one batch of a query's rows (one seed per query).

    DuckDB computes splitmix64 and the uniform exactly (UHUGEINT arithmetic), but its ln is
    glibc's while numpy's log is SIMD: they differ in the last bit for about 0.5% of inputs.
    Calling numpy on each batch keeps every key bit for bit the reference's.
    """
    seed = seeds[0].as_py() if len(seeds) else 0
    return pa.array(gumbel(doc_ids.to_numpy(zero_copy_only=False), seed), pa.float64())


@dataclass(frozen=True)
class Ranking:
    """What a selection ranks on: SQL over the candidate columns, and which candidates it keeps."""

    score: str = "score"
    where: str = "true"


class CandidatePool:
    """A selection's candidates as a DuckDB table, and the members taken from it in rank order.

    `candidates` holds doc_id, score, domain, size (in budget units) and n_bytes, with any stored
    columns a selector ranks on; `take` appends to `chosen` (doc_id, rank), so a selector may take
    several times (one quota per target), each time from the candidates not yet chosen.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        con.create_function(GUMBEL_SQL, _gumbel_batch, ["UBIGINT", "BIGINT"], "DOUBLE",
                            type="arrow", side_effects=False)  # fmt: skip
        con.execute("create or replace table chosen (doc_id ubigint, rank bigint)")
        described = con.execute("select column_name from (describe candidates)").fetchall()
        self.columns = frozenset(row[0] for row in described)

    def count(self, table: str = "candidates") -> int:
        """Rows of `candidates` or `chosen`."""
        return int(self.con.execute(f"select count(*) from {table}").fetchall()[0][0])

    def total_size(self, relation: str = "candidates") -> float:
        """The size in budget units of a relation's rows (all candidates by default)."""
        query = f"select coalesce(sum(size), 0)::double from {relation}"
        return float(self.con.execute(query).fetchall()[0][0])

    def take(
        self, ranking: Ranking, units: float | None, mode: Mode, options: SelectOptions
    ) -> None:
        """Append the best candidates not yet chosen, under `units` (per-domain quotas if set)."""
        params: dict[str, object] = {"offset": self.count("chosen")}
        base = (
            f"(select doc_id, domain, size, ({ranking.score})::double as score from candidates "
            f"anti join chosen using (doc_id) where {ranking.where})"
        )
        keep = "not isnan(score)"  # NaN and NULL scores are never selected
        if mode == "threshold":
            if options.threshold is None:
                raise ValueError("threshold mode needs a threshold")
            keep += " and score >= $threshold"
            params["threshold"] = options.threshold
        key = "score"
        if mode == "gumbel":
            key = f"score / $temperature + {GUMBEL_SQL}(doc_id, $seed)"
            params.update(temperature=options.temperature, seed=options.seed)
        ranked = f"select doc_id, domain, size, {key} as key from {base} where {keep}"
        order = "order by key desc, doc_id"
        if options.domain_weights:
            quota_units = self.total_size(base) if units is None else units
            domains = self.con.execute(f"select distinct domain from {base}").fetchall()
            quotas = domain_quotas([d for (d,) in domains], quota_units, options.domain_weights)
            allowed = {"domain": list(quotas), "allowed": list(quotas.values())}
            self.con.register("quota", pa.table(allowed))
            ranked = (
                f"select doc_id, key, q.allowed, sum(size) over (partition by domain {order} rows "
                f"between unbounded preceding and current row) as used from ({ranked}) "
                "join quota q using (domain)"
            )
            ranked = f"select doc_id, key from ({ranked}) where used <= allowed + $slack"
            params["slack"] = PREFIX_SLACK
        elif units is not None:
            # Sizes are whole numbers (1, bytes, tokens), so the running sum is exact in any order.
            ranked = (
                f"select doc_id, key, sum(size) over ({order} rows between unbounded preceding "
                f"and current row) as used from ({ranked})"
            )
            ranked = f"select doc_id, key from ({ranked}) where used <= $units + $slack"
            params.update(units=units, slack=PREFIX_SLACK)
        self.con.execute(
            f"insert into chosen select doc_id, $offset + row_number() over ({order}) - 1 "
            f"from ({ranked})",
            params,
        )
        if options.domain_weights:
            self.con.unregister("quota")
