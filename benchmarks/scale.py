"""Growth with the corpus: quality -> dedup -> dsir -> select on synthetic corpora of N documents.

For each size N (default 1M, 3M, 10M short documents) it writes a synthetic corpus (Zipf words,
20 domains, 5% exact and 3% near duplicates) and a 20k-document target, then runs the library
pipeline in this process, a step at a time, and measures each step's wall time, CPU time and
peak RSS (psutil, sampled every 20 ms; the flow process is this process):

- ingest, and each selector's per-shard scoring (work units: they parallelise over workers);
- the global steps: dedup's clustering (its set step), dsir's fit (the reduce of per-shard bucket
  counts, inside its selection step) and every selection (the DuckDB queries over the signals);
- the baseline for selection, in the same run: the in-memory way (the candidates table loaded
  into Python, ranked with the numpy reference of `gristmill.selectors.selection`), on the same
  dsir plan; its members must equal the query's.

    python benchmarks/scale.py --sizes 1000000 3000000 --out scale.json

`--selection-only` measures the selection step alone at larger sizes (default 3M, 10M, 30M
candidates): synthetic shard and signal files (doc_id, domain, n_bytes; doc_id, score) are
written directly, then the same query (`run_selection`, Gumbel-top-k 10%, then top-k under a
byte budget with domain quotas) runs against the in-memory baseline on the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gristmill import pipeline
from gristmill.pipeline import curation
from gristmill.pipeline.curation import candidates_query, run_selection
from gristmill.selectors.budget import Budget
from gristmill.selectors.quality import QualitySelector
from gristmill.selectors.selection import SelectOptions, select, splitmix64
from gristmill.storage.files import sql_files
from gristmill.storage.readers import IngestOptions
from gristmill.storage.workspace import Workspace

DOCS_PER_FILE = 250_000
DOMAINS = 20


class PeakRSS:
    """The process's largest resident set size since `reset`, sampled on a thread."""

    def __init__(self, every_s: float = 0.02) -> None:
        self.process = psutil.Process()
        self.every_s = every_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.every_s)

    def reset(self) -> int:
        """Start a new window; the current RSS."""
        self.peak = self.process.memory_info().rss
        return self.peak

    def stop(self) -> None:
        """End the sampling thread."""
        self._stop.set()
        self._thread.join()


def measure(rss: PeakRSS, label: str, fn: Callable[[], Any], rows: list[dict]) -> Any:
    """Run fn, appending its wall and CPU seconds, peak RSS and RSS growth to `rows`."""
    before = rss.reset()
    cpu = psutil.Process().cpu_times()
    start = time.perf_counter()
    result = fn()
    wall = time.perf_counter() - start
    after = psutil.Process().cpu_times()
    used = (after.user - cpu.user) + (after.system - cpu.system)
    rss.peak = max(rss.peak, psutil.Process().memory_info().rss)
    row = {"step": label, "wall_s": round(wall, 2), "cpu_s": round(used, 2),
           "peak_rss_mb": round(rss.peak / 2**20),
           "rss_growth_mb": round((rss.peak - before) / 2**20),
           "load_avg_1m": round(os.getloadavg()[0], 2)}  # fmt: skip
    rows.append(row)
    print(json.dumps(row), flush=True)
    return result


STOP_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "that",
    "for",
    "it",
    "with",
    "as",
    "was",
    "on",
    "be",
    "by",
    "this",
    "at",
    "from",
    "have",
]


def _vocabulary(size: int, rng: np.random.Generator) -> pa.Array:
    """Stop words first (the most frequent Zipf ranks), then random lower-case words."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(3, 10, size)
    words = {"".join(rng.choice(letters, n)) for n in lengths} - set(STOP_WORDS)
    return pa.array(STOP_WORDS + sorted(words))


def _texts(n: int, vocab: pa.Array, zipf: float, shift: int, rng: np.random.Generator) -> pa.Array:
    """n documents of 20-60 Zipf-distributed words (word ranks shifted by `shift`)."""
    lengths = rng.integers(20, 61, n)
    ids = (rng.zipf(zipf, int(lengths.sum())) - 1 + shift) % len(vocab)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    words = pa.LargeListArray.from_arrays(pa.array(offsets), vocab.take(pa.array(ids)))
    return pc.binary_join(words, " ")


def write_corpus(folder: Path, n: int, seed: int) -> list[str]:
    """Parquet files of `n` synthetic documents (text, site), with exact and near duplicates."""
    rng = np.random.default_rng(seed)
    vocab = _vocabulary(8000, np.random.default_rng(0))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for start in range(0, n, DOCS_PER_FILE):
        count = min(DOCS_PER_FILE, n - start)
        texts = _texts(count, vocab, 1.3, 0, rng)
        source = np.arange(count)
        copies = rng.random(count) < 0.08  # 5% exact copies, 3% copies with one more word
        source[copies] = rng.integers(0, np.maximum(np.flatnonzero(copies), 1))
        texts = texts.take(pa.array(source))
        near = copies & (rng.random(count) < 3 / 8)
        extra = vocab.take(pa.array(rng.integers(0, len(vocab), count)))
        texts = pc.if_else(pa.array(near), pc.binary_join_element_wise(texts, extra, " "), texts)
        sites = pa.array([f"site{d:02d}.example" for d in rng.integers(0, DOMAINS, count)])
        path = folder / f"part-{start // DOCS_PER_FILE:04d}.parquet"
        pq.write_table(pa.table({"text": texts, "site": sites}), path)
        paths.append(str(path))
    return paths


def write_target(folder: Path) -> list[str]:
    """20k documents over a shifted part of the vocabulary: what dsir moves the pool towards."""
    rng = np.random.default_rng(99)
    vocab = _vocabulary(8000, np.random.default_rng(0))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "target.parquet"
    texts = _texts(20_000, vocab, 1.3, 40, rng)
    pq.write_table(pa.table({"text": texts, "site": ["target"] * 20_000}), path)
    return [str(path)]


def in_memory_selection(
    query: str, budget: Budget, mode: str, options: SelectOptions
) -> np.ndarray:
    """The baseline: load every candidate into Python and rank with the numpy reference."""
    with duckdb.connect() as con:
        table = con.sql(query).to_arrow_table()
    chosen = select(
        table["score"].to_numpy(zero_copy_only=False).astype(np.float64),
        table["doc_id"].to_numpy(),
        table["size"].to_numpy(zero_copy_only=False).astype(np.float64),
        table["domain"].to_numpy(zero_copy_only=False).astype(str),
        budget.units(table.num_rows),
        mode,
        options,
    )
    return table["doc_id"].to_numpy()[chosen]


def write_signals(folder: Path, n: int) -> tuple[list[Path], list[Path]]:
    """Shard files (doc_id, domain, n_bytes) and signal files (doc_id, score) of n documents."""
    folder.mkdir(parents=True, exist_ok=True)
    shards, signals = [], []
    for number, start in enumerate(range(0, n, 1_000_000)):
        rng = np.random.default_rng(number)
        index = np.arange(start, min(start + 1_000_000, n), dtype=np.uint64)
        doc_ids = pa.array(splitmix64(index), pa.uint64())  # a bijection: distinct ids
        domains = pa.array([f"site{d:02d}.example" for d in rng.integers(0, DOMAINS, len(index))])
        n_bytes = pa.array(rng.integers(100, 2000, len(index)), pa.int64())
        scores = pa.array(np.round(rng.normal(size=len(index)), 3))  # ties, broken by doc_id
        shards.append(folder / f"shard-{number:04d}.parquet")
        signals.append(folder / f"signal-{number:04d}.parquet")
        pq.write_table(pa.table({"doc_id": doc_ids, "domain": domains, "n_bytes": n_bytes}),
                       shards[-1])  # fmt: skip
        pq.write_table(pa.table({"doc_id": doc_ids, "score": scores}), signals[-1])
    return shards, signals


def run_selection_only(n: int, scratch: Path, memory_limit: str, baseline: bool) -> list[dict]:
    """The selection query and (optionally) the in-memory baseline on n synthetic candidates."""
    rows: list[dict] = []
    rss = PeakRSS()
    shards, signals = write_signals(scratch / "signals", n)
    quotas = {"site00.example": 3.0, "*": 1.0}
    cases = [
        ("gumbel 10% docs", "10%", "gumbel", "1.0::double", None),
        ("topk 20% of bytes, domain quotas", f"{int(n * 210)}B", "topk", "d.n_bytes::double",
         quotas),
    ]  # fmt: skip
    members = scratch / "selections" / "s" / "members.parquet"
    selector = QualitySelector.from_params({})
    try:
        for label, budget_text, mode, size, weights in cases:
            query = (
                f"select d.doc_id, s.score, d.domain, d.n_bytes, {size} as size "
                f"from read_parquet({sql_files(shards)}) d "
                f"join read_parquet({sql_files(signals)}) s on s.doc_id = d.doc_id"
            )
            budget = Budget.parse(budget_text)
            options = SelectOptions(
                mode=mode, seed=1, domain_weights=weights, memory_limit=memory_limit
            )
            ours = partial(run_selection, query, members, selector, budget, options)
            measure(rss, f"{label}: query", ours, rows)
            if not baseline:
                continue
            chosen = pq.read_table(members)["doc_id"].to_numpy()
            theirs = partial(in_memory_selection, query, budget, mode, options)
            loaded = measure(rss, f"{label}: baseline in memory", theirs, rows)
            equal = bool(np.array_equal(chosen, loaded))
            rows.append(
                {"step": f"{label}: members equal", "value": equal, "selected": len(chosen)}
            )
            print(json.dumps(rows[-1]), flush=True)
    finally:
        rss.stop()
    return rows


@contextmanager
def clusters_measured(rows: list[dict]) -> Iterator[None]:
    """Measure dedup's global step (the set step inside `curate`) on its own, in its own window."""
    original = curation.score_set
    inner = PeakRSS()

    def measured(*args: Any, **kwargs: Any) -> Any:
        return measure(inner, "  of which dedup: clusters (global)",
                       lambda: original(*args, **kwargs), rows)  # fmt: skip

    curation.score_set = measured
    try:
        yield
    finally:
        curation.score_set = original
        inner.stop()


def run_size(
    n: int, scratch: Path, memory_limit: str, workers: int, dedup_partitions: int | None = None
) -> list[dict]:
    """Every step for one corpus size; the measured rows."""
    rows: list[dict] = []
    rss = PeakRSS()
    try:
        raw = write_corpus(scratch / "raw", n, seed=n)
        target = write_target(scratch / "target")
        ws = Workspace(scratch / "ws")
        work_map = pipeline.ThreadMap(workers)
        ingest = IngestOptions(domain_field="site", shard_bytes=16 << 20)
        measure(
            rss,
            "ingest pool (per chunk)",
            lambda: pipeline.ingest(ws, raw, "pool", ingest, work_map=work_map),
            rows,
        )
        pipeline.ingest(ws, target, "target", IngestOptions(domain_field="site"))
        options = SelectOptions(seed=1, memory_limit=memory_limit)
        dedup: dict[str, Any] = {"memory_limit": memory_limit}
        if dedup_partitions is not None:
            dedup["partitions"] = dedup_partitions

        def curate(selector: str, mode: str | None = None, **kw: Any) -> pipeline.Curation:
            chosen = options.model_copy(update={"mode": mode})
            return pipeline.curate(ws, "pool", selector, options=chosen, work_map=work_map, **kw)

        measure(rss, "quality: score (per shard)", lambda: curate("quality"), rows)
        measure(rss, "quality: select 90% (query)",
                lambda: curate("quality", "topk", name="q", budget="90%"), rows)  # fmt: skip
        with clusters_measured(rows):
            measure(rss, "dedup: minhash (per shard) + clusters (global)",
                    lambda: curate("dedup", params=dedup, parent="q"), rows)  # fmt: skip
        measure(rss, "dedup: select (query)",
                lambda: curate("dedup", params=dedup, parent="q", name="d"), rows)  # fmt: skip
        measure(rss, "dsir: counts + weights (per shard)",
                lambda: curate("dsir", target="target"), rows)  # fmt: skip
        final = measure(rss, "dsir: fit (reduce) + select 10% gumbel (query)",
                        lambda: curate("dsir", target="target", name="s", parent="d",
                                       budget="10%"), rows)  # fmt: skip
        ours = pq.read_table(ws.members_path("s"))["doc_id"].to_numpy()
        files = sorted(final.plan.stored.values())
        query = candidates_query(ws, final.corpus, files, "d", None, "docs", ())
        baseline = measure(
            rss,
            "baseline: select in memory (numpy), same plan",
            lambda: in_memory_selection(query, Budget.parse("10%"), "gumbel", options),
            rows,
        )
        rows.append({"step": "members equal", "value": bool(np.array_equal(ours, baseline)),
                     "selected": len(ours),
                     "candidates": final.record["n_candidates"]})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    finally:
        rss.stop()
    return rows


def main() -> None:
    """Run each size in a fresh scratch folder; print and save the measurements."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="default: 1M 3M 10M (30M selection)")
    parser.add_argument("--selection-only", action="store_true", help="the selection step alone")
    parser.add_argument(
        "--baseline-max",
        type=int,
        default=10_000_000,
        help="selection only: run the in-memory baseline up to this size",
    )
    parser.add_argument("--memory-limit", default="1GB", help="DuckDB memory limit (select, dedup)")
    parser.add_argument("--workers", type=int, default=2, help="threads for the per-shard units")
    parser.add_argument("--dedup-partitions", type=int, help="dedup's partitions (its default)")
    parser.add_argument("--scratch", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--out", type=Path, help="write the measurements to this JSON file")
    args = parser.parse_args()
    results: dict[str, Any] = {"cpus": os.cpu_count(), "memory_limit": args.memory_limit,
                               "sizes": {}}  # fmt: skip
    sizes = args.sizes or ([3_000_000, 10_000_000, 30_000_000] if args.selection_only else
                           [1_000_000, 3_000_000, 10_000_000])  # fmt: skip
    results["selection_only"] = args.selection_only
    if args.scratch is not None:
        args.scratch.mkdir(parents=True, exist_ok=True)
    for n in sizes:
        base = Path(tempfile.mkdtemp(prefix=f"scale-{n}-", dir=args.scratch))
        try:
            print(f"== {n:,} documents", flush=True)
            if args.selection_only:
                rows = run_selection_only(n, base, args.memory_limit, n <= args.baseline_max)
            else:
                rows = run_size(n, base, args.memory_limit, args.workers, args.dedup_partitions)
            results["sizes"][str(n)] = rows
        finally:
            shutil.rmtree(base, ignore_errors=True)
        if args.out:
            args.out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
