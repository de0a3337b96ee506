"""Entropic optimal transport between two point clouds: log-domain Sinkhorn with bounded memory.

The squared-Euclidean cost matrix is kept whole only when it fits `max_cost_bytes`; otherwise it
is recomputed in row blocks every iteration, so memory is O((n + m) d) plus one block. Each pass
over the rows updates the source potentials f block by block and accumulates the log-sum-exp that
updates the target potentials g, so an iteration reads the cost once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gristmill.devices import resolve_device


@dataclass
class SinkhornResult:
    """Dual potentials and how the iterations went."""

    f: np.ndarray  # source (candidate) potentials, length n
    g: np.ndarray  # target potentials, length m
    iterations: int
    marginal_error: float  # L1 error of the plan's target marginal
    converged: bool
    epsilon: float  # absolute entropic regularisation used
    mean_cost: float
    blocked: bool  # True when the cost matrix was recomputed in blocks
    block_rows: int
    device: str

    @property
    def ot_cost(self) -> float:
        """The entropic OT dual objective <a, f> + <b, g> (uniform marginals)."""
        return float(self.f.mean() + self.g.mean())

    def report(self) -> dict[str, Any]:
        """Plain-data summary for the selection's record."""
        return {
            "iterations": self.iterations,
            "marginal_error": self.marginal_error,
            "converged": self.converged,
            "epsilon": self.epsilon,
            "mean_cost": self.mean_cost,
            "ot_cost": self.ot_cost,
            "cost_matrix": f"blocks of {self.block_rows} rows" if self.blocked else "whole",
            "device": self.device,
        }


def sinkhorn(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    epsilon: float = 0.05,
    momentum: float = 1.25,
    max_iter: int = 2000,
    tol: float = 1e-4,
    max_cost_bytes: int = 1 << 30,
    device: str | None = None,
) -> SinkhornResult:
    """Potentials of entropic OT between uniform x (n, d) and y (m, d); epsilon relative to cost.

    The absolute regularisation is epsilon * mean(cost), so the same setting behaves alike for
    any embedding norm. `momentum` over-relaxes the updates (1 is plain Sinkhorn); it starts
    after a few plain iterations, where over-relaxation is safe.
    """
    device = resolve_device(device)
    xs, ys = (
        torch.as_tensor(np.array(v, np.float32) if isinstance(v, np.ndarray) else v).to(
            device, torch.float32
        )
        for v in (x, y)
    )
    n, m = xs.shape[0], ys.shape[0]
    if n == 0 or m == 0:
        raise ValueError("optimal transport needs at least one point on each side")
    x2 = (xs * xs).sum(1)
    y2 = (ys * ys).sum(1)
    # mean_ij |x_i - y_j|^2 in closed form, without the matrix.
    mean_cost = float(x2.mean() + y2.mean() - 2 * (xs.mean(0) @ ys.mean(0)))
    eps = epsilon * max(mean_cost, 1e-12)
    element = 4  # float32
    whole = n * m * element <= max_cost_bytes
    # Two block-sized temporaries besides the cost block.
    block_rows = max(1, min(n, max_cost_bytes // max(1, 3 * m * element)))
    if whole:
        block_rows = max(block_rows, min(n, (64 << 20) // max(1, m * element)))
    blocks = [(s, min(s + block_rows, n)) for s in range(0, n, block_rows)]

    def scaled_cost(start: int, end: int) -> torch.Tensor:
        block = torch.addmm(x2[start:end, None] + y2[None, :], xs[start:end], ys.T, alpha=-2.0)
        return block.clamp_min_(0.0).div_(eps)

    # Potentials are kept divided by eps (F = f / eps), which saves a pass per update.
    cached = [scaled_cost(s, e) for s, e in blocks] if whole else None
    log_a, log_b = -math.log(n), -math.log(m)
    big_f = torch.zeros(n, device=device)
    big_g = torch.zeros(m, device=device)
    error, iteration, converged = float("inf"), 0, False
    for iteration in range(1, max_iter + 1):
        omega = momentum if iteration > 10 else 1.0
        acc = torch.full((m,), -math.inf, device=device)
        for index, (start, end) in enumerate(blocks):
            block = cached[index] if cached is not None else scaled_cost(start, end)
            z = torch.sub(big_g[None, :], block)
            f_new = -(torch.logsumexp(z, dim=1) + log_b)
            big_f[start:end] = (1 - omega) * big_f[start:end] + omega * f_new
            torch.sub(big_f[start:end, None], block, out=z)
            acc = torch.logaddexp(acc, torch.logsumexp(z, dim=0) + log_a)
        h = -acc
        # The plan's target marginal over b is exp(G - H); the error is its L1 distance.
        error = float(torch.expm1((big_g - h).clamp(max=50.0)).abs().mean())
        big_g = (1 - omega) * big_g + omega * h
        if not math.isfinite(error):
            break
        if error < tol:
            converged = True
            break
    f = (big_f * eps).cpu().numpy().astype(np.float64)
    g = (big_g * eps).cpu().numpy().astype(np.float64)
    return SinkhornResult(
        f, g, iteration,
        error, converged, eps, mean_cost, not whole, block_rows, device,
    )  # fmt: skip
