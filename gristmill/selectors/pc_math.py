"""The math of perplexity correlations (Thrush, Potts, Hashimoto 2024) as pure numpy functions.

X is an N x D matrix of bits per byte (N models, D domains or documents), y the N models'
benchmark errors (lower is better). Each estimator returns a length-D vector whose large
entries mark the text whose low loss goes with low error; a projection turns it into sampling
weights p with sum(p) = 1 and 0 <= p_i <= tau_i. The formulas follow the
`perplexity-correlations` package (0.1.2), which the tests compare against.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import rankdata


def _check(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"X must be N x D and y of length N; got {x.shape} and {y.shape}")
    if x.shape[0] < 2:
        raise ValueError("the estimators need at least two models")
    return x, y


def _pair_weights(y: np.ndarray) -> np.ndarray:
    """w with sum_{k<l} sign(y_l - y_k) (a_l - a_k) = w @ a, for any column a."""
    signs = np.triu(np.sign(y[None, :] - y[:, None]), k=1)  # [k, l] for k < l
    return signs.sum(axis=0) - signs.sum(axis=1)


def _pairs(n: int) -> float:
    return n * (n - 1) / 2


def column_cdf(x: np.ndarray) -> np.ndarray:
    """Within-column ranks / N (ties share their average rank)."""
    return rankdata(x, axis=0) / x.shape[0]


def product(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean of y_k * x_k over models (Plan et al. 2016); not robust to outliers."""
    x, y = _check(x, y)
    return (y[:, None] * x).mean(axis=0)


def sign(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean over model pairs of sign(y_l - y_k) * (x_l - x_k) (Chen and Banerjee 2017)."""
    x, y = _check(x, y)
    return _pair_weights(y) @ x / _pairs(len(y))


def sign_cdf(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean over pairs of sign(y_l - y_k) * (F(x_l) - F(x_k)), F the column CDF (the paper's)."""
    x, y = _check(x, y)
    return _pair_weights(y) @ column_cdf(x) / _pairs(len(y))


def sign_sign(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean over model pairs of sign(y_l - y_k) * sign(x_l - x_k)."""
    x, y = _check(x, y)
    total = np.zeros(x.shape[1])
    for k in range(len(y) - 1):  # O(N^2 D) time, O(N D) memory
        total += np.sign(y[k + 1 :] - y[k]) @ np.sign(x[k + 1 :] - x[k])
    return total / _pairs(len(y))


def spearmanr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman rank correlation between y and each column of X: Pearson's r of the ranks.

    Ties share their average rank, as in scipy.stats.spearmanr; the shortcut
    1 - 6 sum d^2 / (N (N^2 - 1)) holds only without ties (a constant column would score 0.5).
    A constant column (or a constant y) has no correlation: 0.
    """
    x, y = _check(x, y)
    rx = rankdata(x, axis=0)
    ry = rankdata(y)
    rx -= rx.mean(axis=0)
    ry -= ry.mean()
    scale = np.sqrt((rx**2).sum(axis=0) * (ry**2).sum())
    return np.divide(ry @ rx, scale, out=np.zeros(x.shape[1]), where=scale > 0)


ESTIMATORS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "spearmanr": spearmanr,
    "sign_cdf": sign_cdf,
    "sign": sign,
    "sign_sign": sign_sign,
    "product": product,
}


def _check_tau(estimate: np.ndarray, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    estimate, tau = np.asarray(estimate, np.float64), np.asarray(tau, np.float64)
    if estimate.ndim != 1 or estimate.shape != tau.shape:
        raise ValueError(f"estimate and tau must be vectors of one length; got {estimate.shape} "
                         f"and {tau.shape}")  # fmt: skip
    if np.any(tau <= 0):
        raise ValueError("every cap tau must be positive (leave out domains with no text)")
    if tau.sum() < 1:
        raise ValueError(f"the caps sum to {tau.sum():.4g} < 1: the budget exceeds the pool")
    return estimate, tau


def linear(estimate: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """argmax <estimate, p> over the capped simplex: fill the best domains to tau in turn."""
    estimate, tau = _check_tau(estimate, tau)
    order = np.argsort(-estimate, kind="stable")
    filled = np.cumsum(tau[order])
    last = int(np.flatnonzero(filled >= 1)[0])  # the domain that takes the remainder
    p = np.zeros_like(estimate)
    p[order[:last]] = tau[order[:last]]
    p[order[last]] = 1 - p.sum()
    return p


def l2(estimate: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Euclidean projection on the capped simplex: clip(estimate + c, 0, tau) summing to 1.

    The sum is piecewise linear in c with breakpoints where an entry hits 0 or its cap, so c
    is found exactly between the two breakpoints that bracket 1 (no bisection tolerance).
    """
    estimate, tau = _check_tau(estimate, tau)

    def total(c: float) -> float:
        return float(np.clip(estimate + c, 0, tau).sum())

    points = np.unique(np.concatenate([-estimate, tau - estimate]))
    lo, hi = 0, len(points) - 1  # total(points[0]) = 0 <= 1 <= sum(tau) = total(points[-1])
    while hi - lo > 1:  # binary search over breakpoints: O(D log D)
        middle = (lo + hi) // 2
        if total(points[middle]) < 1.0:
            lo = middle
        else:
            hi = middle
    low_sum, high_sum = total(points[lo]), total(points[hi])
    if high_sum == low_sum:
        return np.clip(estimate + points[hi], 0, tau)
    offset = points[lo] + (1.0 - low_sum) * (points[hi] - points[lo]) / (high_sum - low_sum)
    return np.clip(estimate + offset, 0, tau)


PROJECTIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "linear": linear,
    "l2": l2,
}


def grouped_bits_per_byte(
    bits_per_byte: np.ndarray, n_tokens: np.ndarray, groups: np.ndarray, n_groups: int
) -> np.ndarray:
    """Token-weighted mean bits per byte per group, for each model (rows of bits_per_byte).

    bits_per_byte and n_tokens are models x documents (n_tokens may be one row for all models,
    as with a shared tokenizer); groups[j] in [0, n_groups) is document j's group. Documents
    without tokens (or NaN scores) carry no weight; an empty group is NaN.
    """
    counts = np.broadcast_to(n_tokens, bits_per_byte.shape)
    weights = np.where(np.isfinite(bits_per_byte), counts, 0).astype(np.float64)
    values = np.where(weights > 0, bits_per_byte, 0.0)
    out = np.empty((bits_per_byte.shape[0], n_groups))
    for row in range(bits_per_byte.shape[0]):
        total = np.bincount(groups, weights[row] * values[row], minlength=n_groups)
        mass = np.bincount(groups, weights[row], minlength=n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[row] = total / mass
    return out
