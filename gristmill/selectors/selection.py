"""Selection under a budget: top-k, threshold and Gumbel-top-k, with per-domain quotas.

Pure functions over numpy arrays: scores in, ranked indices out. Ties break by doc_id, and
the Gumbel noise of a document depends only on (seed, doc_id), so a selection does not depend
on the order of shards or the number of workers.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
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
    domains: np.ndarray, sizes: np.ndarray, units: float, weights: dict[str, float]
) -> dict[str, float]:
    """Split a budget across the domains present, in proportion to their weights."""
    present = {str(d) for d in np.unique(domains)}
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
    """Selected indices in rank order, honouring per-domain quotas when weights are given."""
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
    quotas = domain_quotas(domains, sizes, quota_units, options.domain_weights)
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
