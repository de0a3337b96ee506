"""Core-set algorithms over embeddings: DEFT clusters, k-center greedy, facility location.

Pure functions: vectors (L2-normalised float32 rows), per-document sizes and a budget in the same
unit in; a ranked selection out. Each method returns the chosen indices in greedy order (so any
prefix is the method's answer for a smaller budget), the cluster each document belongs to, and a
small report. Methods stop once the chosen sizes reach the budget.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from gristmill.devices import resolve_device


@dataclass
class Coreset:
    """Chosen indices in rank order, each document's cluster (-1: none) and what was measured."""

    order: np.ndarray
    cluster: np.ndarray
    report: dict[str, Any] = field(default_factory=dict)


def normalised(vectors: np.ndarray, center: bool) -> np.ndarray:
    """Rows scaled to unit length, after subtracting the mean row when `center`."""
    vectors = np.asarray(vectors, np.float32)
    if center and len(vectors):
        vectors = vectors - vectors.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def _prefix_reaching(order: np.ndarray, sizes: np.ndarray, units: float) -> np.ndarray:
    """The shortest prefix of `order` whose sizes reach `units` (all of it when they never do)."""
    total = np.cumsum(sizes[order], dtype=np.float64)
    return order[: int(np.searchsorted(total, units - 1e-9, side="left")) + 1]


# --- k-center greedy ---------------------------------------------------------------------------

# Squared distance below which a document counts as covered: float32 rounding of |x - c|^2 for
# identical unit vectors is around 1e-7, and the rest are then filled in index order.
_COVERED = 1e-6


def kcenter_greedy(
    vectors: np.ndarray,
    sizes: np.ndarray,
    units: float,
    first: int,
    block_size: int = 512,
    device: str | None = None,
) -> Coreset:
    """Greedy farthest-point selection (Sener & Savarese 2018) with exact Euclidean distances.

    Distances to the chosen centres are applied lazily per block of points: a block keeps an
    upper bound of its largest distance-to-nearest-centre, and only the block holding the
    current maximum is brought up to date, with all centres chosen since its last update in one
    matrix product. The result is the eager algorithm's (every (point, centre) pair is computed
    at most once), without touching the whole pool for every centre.
    """
    device = resolve_device(device)
    threads = torch.get_num_threads()
    if device == "cpu":
        # The per-block products are small: with several OpenMP threads on a busy machine they
        # spin-wait on each other (measured 60x slower on a loaded 2-core box), one thread not.
        torch.set_num_threads(1)
    try:
        return _kcenter_lazy(vectors, sizes, units, first, block_size, device)
    finally:
        torch.set_num_threads(threads)


def _kcenter_lazy(
    vectors: np.ndarray,
    sizes: np.ndarray,
    units: float,
    first: int,
    block_size: int,
    device: str,
) -> Coreset:
    n = len(vectors)
    x = torch.from_numpy(np.ascontiguousarray(vectors, np.float32)).to(device)
    squared = (x * x).sum(dim=1)
    nearest = torch.full((n,), math.inf, device=device)  # squared distance to nearest centre
    assigned = torch.full((n,), -1, dtype=torch.long, device=device)
    centre_ids = torch.empty(n, dtype=torch.long, device=device)
    starts = list(range(0, n, block_size))
    applied = [0] * len(starts)  # centres already applied to each block
    best = [0] * len(starts)  # index of each block's farthest point when up to date
    heap = [(-math.inf, b) for b in range(len(starts))]
    centres: list[int] = []
    total = 0.0

    def update(b: int) -> float:
        lo, hi = starts[b], min(starts[b] + block_size, n)
        pending = centre_ids[applied[b] : len(centres)]
        products = x[lo:hi] @ x[pending].T
        d2_min, which = (squared[pending][None, :] - 2.0 * products).min(dim=1)
        d2_min += squared[lo:hi]
        current = nearest[lo:hi]
        closer = d2_min < current
        assigned[lo:hi] = torch.where(closer, pending[which], assigned[lo:hi])
        torch.minimum(current, d2_min, out=current)
        applied[b] = len(centres)
        value, top = current.max(dim=0)
        best[b] = lo + int(top)
        return float(value)

    def choose(index: int) -> None:
        nonlocal total
        centre_ids[len(centres)] = index
        centres.append(index)
        nearest[index] = -1.0  # a centre never becomes the farthest point again
        assigned[index] = index
        total += float(sizes[index])

    choose(first)
    while total < units - 1e-9 and len(centres) < n:
        while True:
            negative_bound, b = heap[0]
            if applied[b] == len(centres):
                break
            heapq.heapreplace(heap, (-update(b), b))
        if -negative_bound <= _COVERED:  # every document is a centre or (nearly) identical to one
            break
        choose(best[b])
    for b in range(len(starts)):  # nearest centre of every document, for the cluster column
        if applied[b] < len(centres):
            update(b)
    picked = np.zeros(n, bool)
    picked[centres] = True
    order = np.asarray(centres, np.int64)
    if total < units - 1e-9:  # the rest duplicate chosen centres: fill in index order
        rest = np.flatnonzero(~picked)
        order = np.concatenate([order, _prefix_reaching(rest, sizes, units - total)])
    nearest_np = np.maximum(nearest.cpu().numpy(), 0.0)
    covering = float(np.sqrt(max(float(nearest_np.max(initial=0.0)), 0.0)))
    report = {"centres": len(centres), "covering_radius": covering, "device": device}
    return Coreset(order, assigned.cpu().numpy(), report)


def covering_radius(vectors: np.ndarray, chosen: np.ndarray, block_size: int = 4096) -> float:
    """Largest Euclidean distance from any vector to its nearest chosen vector."""
    centres = vectors[chosen]
    c2 = (centres * centres).sum(1)
    worst = 0.0
    for lo in range(0, len(vectors), block_size):
        block = vectors[lo : lo + block_size]
        d2 = (block * block).sum(1)[:, None] + c2[None, :] - 2.0 * block @ centres.T
        worst = max(worst, float(np.maximum(d2.min(axis=1), 0).max(initial=0.0)))
    return math.sqrt(worst)


# --- facility location -------------------------------------------------------------------------


@dataclass
class Similarity:
    """Non-negative similarities sim(i, j) by column j (the candidate facility).

    Dense: an (n, n) matrix. Sparse: CSC arrays of a k-nearest-neighbour graph (plus the
    diagonal), where column j lists the documents that have j among their neighbours.
    """

    n: int
    dense: np.ndarray | None = None
    indptr: np.ndarray | None = None
    indices: np.ndarray | None = None
    data: np.ndarray | None = None

    def column(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and similarities of column j."""
        if self.dense is not None:
            return np.arange(self.n), self.dense[:, j]
        assert self.indptr is not None and self.indices is not None and self.data is not None
        lo, hi = self.indptr[j], self.indptr[j + 1]
        return self.indices[lo:hi], self.data[lo:hi]

    def gain(self, j: int, covered: np.ndarray) -> float:
        """Increase of sum_i max(covered_i, sim(i, j)) from adding j."""
        rows, sims = self.column(j)
        return float(np.maximum(sims - covered[rows], 0).sum(dtype=np.float64))

    def gains(self, columns: np.ndarray, covered: np.ndarray) -> np.ndarray:
        """Gains of several columns at once."""
        if self.dense is not None:
            block = self.dense[:, columns] - covered[:, None]
            return np.maximum(block, 0).sum(axis=0, dtype=np.float64)
        assert self.indptr is not None and self.indices is not None and self.data is not None
        lo, hi = self.indptr[columns], self.indptr[columns + 1]
        lengths = hi - lo  # never zero: every column holds its diagonal
        offsets = np.repeat(lo - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        values = np.maximum(self.data[offsets] - covered[self.indices[offsets]], 0)
        return np.add.reduceat(values.astype(np.float64), np.cumsum(lengths) - lengths)

    @property
    def nbytes(self) -> int:
        """Memory held by the similarities."""
        if self.dense is not None:
            return int(self.dense.nbytes)
        assert self.indptr is not None and self.indices is not None and self.data is not None
        return int(self.indptr.nbytes + self.indices.nbytes + self.data.nbytes)


def similarity(
    vectors: np.ndarray, neighbours: int, dense_max_bytes: int, nprobe: int = 16
) -> Similarity:
    """Cosine similarity clipped at 0: dense when n x n fits, else a FAISS kNN graph."""
    n = len(vectors)
    if 4 * n * n <= dense_max_bytes:
        return Similarity(n, dense=np.maximum(vectors @ vectors.T, 0).astype(np.float32))
    neighbour_ids, sims = knn_graph(vectors, neighbours, nprobe)
    rows = np.repeat(np.arange(n), neighbour_ids.shape[1])
    cols, values = neighbour_ids.reshape(-1), sims.reshape(-1)
    # Self-matches are replaced by an explicit diagonal: with exact duplicates a document's own
    # entry can lose the tie to its copies, and every column must hold at least itself.
    keep = (cols >= 0) & (cols != rows)
    rows = np.concatenate([rows[keep], np.arange(n)])
    cols = np.concatenate([cols[keep], np.arange(n)])
    values = np.concatenate([np.maximum(values[keep], 0), np.ones(n, np.float32)])
    graph = sp.csc_matrix((values.astype(np.float32), (rows, cols)), shape=(n, n))
    graph.sum_duplicates()
    return Similarity(n, indptr=graph.indptr, indices=graph.indices, data=graph.data)


def knn_graph(vectors: np.ndarray, neighbours: int, nprobe: int = 16) -> tuple[np.ndarray, ...]:
    """Approximate inner-product neighbours of every vector (FAISS IVF; exact for small n)."""
    import faiss

    n, d = vectors.shape
    k = min(neighbours + 1, n)  # +1: a document is usually its own first neighbour
    lists = int(4 * math.sqrt(n))
    if n < 40 * lists:  # too few points to train the coarse quantiser: exact search
        index = faiss.IndexFlatIP(d)
    else:
        quantiser = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantiser, d, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = 1234  # k-means of the coarse quantiser: fixed, so graphs repeat
        index.train(vectors)
        index.nprobe = nprobe
    index.add(vectors)
    sims, ids = index.search(vectors, k)
    return ids, sims


def facility_location(
    sim: Similarity,
    sizes: np.ndarray,
    units: float,
    stochastic: bool = False,
    epsilon: float = 0.01,
    seed: int = 0,
) -> Coreset:
    """Greedy maximisation of f(S) = sum_i max_{j in S} sim(i, j) until the budget is reached.

    Lazy greedy (Minoux) gives the plain greedy answer; stochastic greedy (Mirzasoleiman et al.
    2015) evaluates (n / k) log(1 / epsilon) random candidates per step.
    """
    n = sim.n
    covered = np.zeros(n, np.float32)
    facility = np.full(n, -1, np.int64)
    picked = np.zeros(n, bool)
    order: list[int] = []
    total = 0.0
    objective = 0.0

    def add(j: int, gain: float) -> None:
        nonlocal total, objective
        rows, sims = sim.column(j)
        better = sims > covered[rows]
        covered[rows[better]] = sims[better]
        facility[rows[better]] = j
        picked[j] = True
        order.append(j)
        total += float(sizes[j])
        objective += gain

    evaluations = 0
    if stochastic:
        rng = np.random.default_rng(seed)
        expected = max(1.0, min(n, units / max(float(np.mean(sizes)), 1e-12)))
        sample = max(1, math.ceil(n / expected * math.log(1 / epsilon)))
        remaining = np.arange(n)
        count = n
        while total < units - 1e-9 and count:
            positions = (
                rng.choice(count, sample, replace=False) if sample < count else np.arange(count)
            )
            gains = sim.gains(remaining[positions], covered)
            evaluations += len(positions)
            at = int(np.argmax(gains))
            pos = positions[at]
            add(int(remaining[pos]), float(gains[at]))
            remaining[pos] = remaining[count - 1]
            count -= 1
    else:
        initial = sim.gains(np.arange(n), covered)
        evaluations = n
        heap = [(-g, j) for j, g in enumerate(initial.tolist())]
        heapq.heapify(heap)
        while total < units - 1e-9 and heap:
            _, j = heapq.heappop(heap)
            gain = sim.gain(j, covered)
            evaluations += 1
            if not heap or gain >= -heap[0][0] - 1e-7:
                add(j, gain)
            else:
                heapq.heappush(heap, (-gain, j))
    report = {
        "objective": float(covered.sum(dtype=np.float64)),
        "evaluations": evaluations,
        "greedy": "stochastic" if stochastic else "lazy",
        "similarity": "dense" if sim.dense is not None else "knn",
        "similarity_bytes": sim.nbytes,
    }
    return Coreset(np.asarray(order, np.int64), facility, report)


def facility_objective(sim: Similarity, chosen: np.ndarray) -> float:
    """f(S) for a set of chosen columns."""
    covered = np.zeros(sim.n, np.float32)
    for j in chosen:
        rows, sims = sim.column(int(j))
        np.maximum.at(covered, rows, sims)
    return float(covered.sum(dtype=np.float64))


# --- DEFT-UCS ------------------------------------------------------------------------------------


def elbow(ks: list[int], inertias: list[float]) -> int:
    """The K of the inertia curve's knee: farthest below the chord between its ends (Kneedle)."""
    if len(ks) < 3:
        return ks[0]
    x = (np.asarray(ks, float) - ks[0]) / (ks[-1] - ks[0])
    y = np.asarray(inertias, float)
    y = (y - y.min()) / max(y.max() - y.min(), 1e-12)
    below_chord = (1 - x) - y  # the chord runs from (0, 1) to (1, 0)
    return ks[int(np.argmax(below_chord))]


def kmeans(vectors: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Labels, centroids and inertia of k-means (scikit-learn, k-means++ initialisation)."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    # One thread: OpenMP workers spin-wait on a shared machine (5x slower measured on 2 cores).
    with threadpool_limits(1):
        model = KMeans(n_clusters=k, n_init=1, random_state=seed, max_iter=100).fit(vectors)
    return model.labels_.astype(np.int64), model.cluster_centers_.astype(np.float32), model.inertia_


def choose_k(vectors: np.ndarray, max_k: int, seed: int, sample: int = 5000) -> dict[str, Any]:
    """K by the elbow of k-means inertia for K = 2..max_k, fitted on a sample of the pool."""
    rng = np.random.default_rng(seed)
    fit_on = vectors
    if len(vectors) > sample:
        fit_on = vectors[np.sort(rng.choice(len(vectors), sample, replace=False))]
    # k-means cannot find more clusters than distinct points (a pool of copies has one).
    distinct = len(np.unique(fit_on, axis=0))
    ks = list(range(2, min(max_k, distinct - 1) + 1))
    if not ks:
        return {"k": max(1, min(distinct, 2)), "ks": [], "inertias": []}
    inertias = [kmeans(fit_on, k, seed)[2] for k in ks]
    return {"k": elbow(ks, inertias), "ks": ks, "inertias": [round(v, 4) for v in inertias]}


def capped_shares(totals: np.ndarray, weights: np.ndarray, units: float) -> np.ndarray:
    """Split `units` across groups in proportion to `weights`, capped by each group's total.

    What a capped group cannot take goes to the others (in proportion again); groups of weight
    zero only get what is left when every other group is full.
    """
    shares = np.zeros(len(totals))
    left = min(float(units), float(totals.sum()))
    for phase in (np.asarray(weights, np.float64), np.ones(len(totals))):
        open_groups = (phase > 0) & (shares < totals - 1e-9)
        while left > 1e-9 and open_groups.any():
            w = np.where(open_groups, phase, 0.0)
            # Each round either fills at least one group or hands out everything left.
            given = np.minimum(left * w / w.sum(), totals - shares)
            shares += given
            left -= float(given.sum())
            open_groups &= shares < totals - 1e-9
    return shares


def deft_ucs(
    vectors: np.ndarray,
    sizes: np.ndarray,
    units: float,
    labels: np.ndarray,
    centroids: np.ndarray,
    alpha: float,
    beta: float,
    share: str,
    seed: int,
) -> Coreset:
    """DEFT-UCS (Das & Khetan 2023): per cluster, its budget share split into the documents
    closest to the centroid (alpha: easy), farthest (beta: hard) and random (the rest).

    Shares: `equal` per cluster (the paper's rule), `proportional` to cluster size, or `spread`:
    proportional to the cluster's summed distance to its centroid, so a tight cluster of near
    duplicates gets little however many members it has.

    Every chosen document gets the fraction of its part's share used up to and including it;
    ranking by that fraction interleaves parts and clusters, so any prefix takes each in
    proportion.
    """
    k = len(centroids)
    totals = np.bincount(labels, weights=sizes, minlength=k)
    distances = np.linalg.norm(vectors - centroids[labels], axis=1)
    weights = {
        "equal": np.ones(k),
        "proportional": totals,
        "spread": np.bincount(labels, weights=sizes * distances, minlength=k),
    }[share]
    shares = capped_shares(totals, weights, units)
    rng = np.random.default_rng(seed)
    chosen, keys = [], []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        by_distance = members[np.lexsort((members, distances[members]))]
        left = np.ones(len(members), bool)
        position = {int(m): i for i, m in enumerate(by_distance)}
        parts = [
            (alpha, by_distance),
            (beta, by_distance[::-1]),
            (1.0 - alpha - beta, members[rng.permutation(len(members))]),
        ]
        for weight, ranked in parts:
            quota = weight * shares[c]
            if quota <= 1e-12:
                continue
            ranked = np.asarray([m for m in ranked if left[position[int(m)]]], np.int64)
            if not len(ranked):
                continue
            taken = _prefix_reaching(ranked, sizes, quota)
            used = np.cumsum(sizes[taken], dtype=np.float64)
            for m in taken:
                left[position[int(m)]] = False
            chosen.append(taken)
            keys.append(used / quota)
    if not chosen:
        return Coreset(np.zeros(0, np.int64), labels, {"clusters": k})
    picked = np.concatenate(chosen)
    key = np.concatenate(keys)
    order = picked[np.lexsort((picked, key))]
    report = {
        "clusters": k,
        "cluster_sizes": np.bincount(labels, minlength=k).tolist(),
        "cluster_shares": [round(float(s), 3) for s in shares],
    }
    return Coreset(order, labels, report)


# --- partitions ----------------------------------------------------------------------------------


def partitions(n: int, partition_size: int, seed: int) -> list[np.ndarray]:
    """Random near-equal partitions of range(n) of at most `partition_size` (INGENIOUS)."""
    count = max(1, math.ceil(n / partition_size))
    shuffled = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(shuffled, count)]


def merge_partitions(
    parts: list[np.ndarray], orders: list[np.ndarray], sizes: np.ndarray
) -> np.ndarray:
    """One ranking from per-partition rankings: by the share of its partition's size used so far."""
    chosen, keys = [], []
    for members, order in zip(parts, orders, strict=True):
        picked = members[order]
        chosen.append(picked)
        keys.append(np.cumsum(sizes[picked], dtype=np.float64) / float(sizes[members].sum()))
    picked = np.concatenate(chosen)
    key = np.concatenate(keys)
    return picked[np.lexsort((picked, key))]
