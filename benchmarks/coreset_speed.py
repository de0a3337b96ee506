"""Speed of the coreset methods on 100,000 x 384-d embeddings (the core-set step alone).

The vectors are "real-ish": a mixture of 2,000 Gaussian blobs of different widths in 384
dimensions, L2-normalised (what an encoder's output looks like to these algorithms: clustered,
unit length). Each method selects 10% of the pool by documents, as the selector runs it:

- kcenter: exact greedy farthest point, lazy blocked distances; baseline in the same run: the
  eager textbook loop (one pass over every point per centre), timed on its first
  `--eager-centres` centres and extrapolated linearly (each of its iterations costs the same).
  Both single-threaded (see kcenter_greedy: threads spin-wait on a shared 2-core box).
- facility_location: 10-NN FAISS graph (never dense: 4 n^2 bytes would be 40 GB), then lazy and
  stochastic (epsilon 0.01) greedy; the ratio is stochastic / lazy.
- deft: elbow over K = 2..15 on a 5,000-point sample, k-means on the pool, easy/hard shares.

Peak resident memory of the process is printed at the end.

    python benchmarks/coreset_speed.py --n 100000 --dim 384
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
from threadpoolctl import threadpool_limits

from gristmill.selectors import coreset_methods as methods


def realish(n: int, dim: int, blobs: int, seed: int) -> np.ndarray:
    """Unit vectors from a mixture of Gaussian blobs with varied widths."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(blobs, dim)).astype(np.float32)
    which = rng.integers(0, blobs, n)
    widths = rng.uniform(0.3, 1.2, blobs).astype(np.float32)
    noise = rng.normal(size=(n, dim)).astype(np.float32)
    return methods.normalised(centres[which] + widths[which, None] * noise, center=False)


def eager_kcenter(x: np.ndarray, centres: int, first: int) -> float:
    """Seconds the textbook loop takes for its first `centres` centres."""
    started = time.perf_counter()
    squared = (x * x).sum(1)
    nearest = np.full(len(x), np.inf, np.float32)
    j = first
    for _ in range(centres):
        d2 = squared + squared[j] - 2.0 * (x @ x[j])
        np.minimum(nearest, d2, out=nearest)
        nearest[j] = -1
        j = int(np.argmax(nearest))
    return time.perf_counter() - started


def main() -> None:
    """Time each method and print a JSON report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--eager-centres", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    x = realish(args.n, args.dim, 2000, args.seed)
    sizes = np.ones(args.n)
    units = args.fraction * args.n
    report: dict = {"n": args.n, "dim": args.dim, "selected": int(units)}

    started = time.perf_counter()
    kc = methods.kcenter_greedy(x, sizes, units, first=0, device="cpu")
    lazy_s = time.perf_counter() - started
    with threadpool_limits(1):  # like the lazy loop on CPU: one thread, no spin-waiting
        eager_part = eager_kcenter(x, args.eager_centres, 0)
    eager_s = eager_part * units / args.eager_centres
    report["kcenter"] = {
        "seconds": round(lazy_s, 1),
        "eager_baseline_seconds_extrapolated": round(eager_s, 1),
        "speedup_vs_eager": round(eager_s / lazy_s, 2),
        "covering_radius": round(kc.report["covering_radius"], 4),
    }

    started = time.perf_counter()
    sim = methods.similarity(x, neighbours=10, dense_max_bytes=256 << 20)
    graph_s = time.perf_counter() - started
    fl = {"graph_seconds": round(graph_s, 1), "graph_bytes": sim.nbytes,
          "dense_bytes_avoided": 4 * args.n * args.n}  # fmt: skip
    for greedy in ("lazy", "stochastic"):
        started = time.perf_counter()
        result = methods.facility_location(sim, sizes, units, greedy == "stochastic", 0.01, 0)
        fl[greedy] = {"seconds": round(time.perf_counter() - started, 1),
                      "objective": round(result.report["objective"], 1),
                      "evaluations": result.report["evaluations"]}  # fmt: skip
    fl["stochastic_over_lazy_objective"] = round(
        fl["stochastic"]["objective"] / fl["lazy"]["objective"], 4
    )
    fl["total_lazy_seconds"] = round(graph_s + fl["lazy"]["seconds"], 1)
    report["facility_location"] = fl

    started = time.perf_counter()
    chosen = methods.choose_k(x, 15, args.seed)
    labels, centroids, _ = methods.kmeans(x, chosen["k"], args.seed)
    deft = methods.deft_ucs(x, sizes, units, labels, centroids, 0.5, 0.5, "equal", args.seed)
    report["deft"] = {"seconds": round(time.perf_counter() - started, 1), "k": chosen["k"],
                      "selected": len(deft.order)}  # fmt: skip
    report["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
