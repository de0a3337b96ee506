"""Quality of the coreset methods on real text: AG News (all 7,600 test descriptions, four
classes) from /work/shared/data, hash embeddings (256-d, centred), 10% budgets.

1. k-center's covering radius against random selections of the same size (mean of 5).
2. Facility location's objective: lazy greedy, stochastic greedy (epsilon 0.01) and random, on
   the dense similarity and on the 10-NN graph (the selector switches above 256 MiB).
3. Near duplicates: the World class gets as many near-copies (a few words swapped) of five of
   its articles as it has articles, so half of that domain (20% of the pool) is one tight
   cluster; the share of each method's 10% core-set drawn from it (random draws ~20%).

    python benchmarks/coreset_quality.py --data /work/shared/data
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from gristmill.selectors import coreset_methods as methods
from gristmill.selectors.featurize import Embedder, EmbedderConfig


def ag_news(data: Path) -> tuple[list[str], list[str]]:
    """Texts and class labels of AG News's test split."""
    with open(data / "ag_news_csv" / "test.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    return [f"{title}. {description}" for _, title, description in rows], [r[0] for r in rows]


def near_copies(texts: list[str], bases: list[str], count: int, seed: int) -> list[str]:
    """`count` copies of `bases` with about one word in fifteen replaced by a random word."""
    rng = np.random.default_rng(seed)
    vocabulary = " ".join(texts[:2000]).split()
    copies = []
    for i in range(count):
        words = bases[i % len(bases)].split()
        for _ in range(max(1, len(words) // 15)):
            words[int(rng.integers(len(words)))] = vocabulary[int(rng.integers(len(vocabulary)))]
        copies.append(" ".join(words))
    return copies


def embed(texts: list[str]) -> np.ndarray:
    """Centred, normalised 256-d hash embeddings."""
    return methods.normalised(Embedder(EmbedderConfig(dim=256)).embed(texts), center=True)


def run_methods(x: np.ndarray, units: float, seed: int) -> dict[str, np.ndarray]:
    """Each method's chosen indices (the budget prefix) on vectors `x`."""
    n, sizes = len(x), np.ones(len(x))
    cut = int(units)
    chosen = {"kcenter": methods.kcenter_greedy(x, sizes, units, 0, device="cpu").order[:cut]}
    dense = methods.similarity(x, 10, 1 << 40)
    knn = methods.similarity(x, 10, 0)
    for label, sim in (("dense", dense), ("knn", knn)):
        for greedy in ("lazy", "stochastic"):
            stochastic = greedy == "stochastic"
            result = methods.facility_location(sim, sizes, units, stochastic, 0.01, seed)
            chosen[f"facility_location_{label}_{greedy}"] = result.order[:cut]
    k = methods.choose_k(x, 15, seed)["k"]
    labels, centroids, _ = methods.kmeans(x, k, seed)
    for share in ("spread", "equal", "proportional"):
        result = methods.deft_ucs(x, sizes, units, labels, centroids, 0.5, 0.5, share, seed)
        chosen[f"deft_{share}"] = result.order[:cut]
    chosen["random"] = np.random.default_rng(seed).choice(n, cut, replace=False)
    return chosen


def main() -> None:
    """Print the three quality checks as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    texts, labels = ag_news(args.data)
    x = embed(texts)
    n, units = len(x), args.fraction * len(x)
    sizes = np.ones(n)
    rng = np.random.default_rng(args.seed)
    randoms = [rng.choice(n, int(units), replace=False) for _ in range(5)]
    report: dict = {"pool": n, "budget": int(units)}
    kcenter = methods.kcenter_greedy(x, sizes, units, 0, device="cpu")
    random_radius = float(np.mean([methods.covering_radius(x, r) for r in randoms]))
    report["kcenter_radius"] = {
        "kcenter": round(kcenter.report["covering_radius"], 4),
        "random_mean": round(random_radius, 4),
        "ratio": round(kcenter.report["covering_radius"] / random_radius, 3),
    }
    for label, budget_bytes in (("dense", 1 << 40), ("knn", 0)):
        sim = methods.similarity(x, 10, budget_bytes)
        lazy = methods.facility_location(sim, sizes, units)
        stochastic = methods.facility_location(sim, sizes, units, True, 0.01, args.seed)
        random_value = float(np.mean([methods.facility_objective(sim, r) for r in randoms]))
        report[f"facility_location_{label}"] = {
            "lazy": round(lazy.report["objective"], 1),
            "stochastic": round(stochastic.report["objective"], 1),
            "random_mean": round(random_value, 1),
            "stochastic_over_lazy": round(stochastic.report["objective"]
                                          / lazy.report["objective"], 4),
            "lazy_over_random": round(lazy.report["objective"] / random_value, 3),
        }  # fmt: skip

    world = [t for t, c in zip(texts, labels, strict=True) if c == "1"]
    copies = near_copies(texts, world[:5], len(world), args.seed)
    pool = texts + copies
    is_copy = np.r_[np.zeros(n, bool), np.ones(len(copies), bool)]
    is_copy |= np.isin(np.arange(len(pool)), [texts.index(b) for b in world[:5]])
    xd = embed(pool)
    chosen = run_methods(xd, args.fraction * len(pool), args.seed)
    report["near_duplicates"] = {
        "pool": len(pool),
        "cluster_share_of_pool": round(float(is_copy.mean()), 4),
        "share_of_coreset": {m: round(float(is_copy[c].mean()), 4) for m, c in chosen.items()},
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
