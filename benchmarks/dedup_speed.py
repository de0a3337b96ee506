"""End-to-end near-dedup speed: gristmill vs a datasketch baseline, same documents, same run.

Documents of about 1 KB are synthesised by concatenating random real sentences (TinyStories,
WikiText-2, IMDB from ../shared/data) until they pass 1,000 characters; 5% are near copies of
an earlier document (one sentence replaced). They are written as Parquet shards of 100,000.
Each system runs in its own subprocess (one core: numba and DuckDB are held to one thread) so
that peak RSS is its own:

- gristmill: `DedupSelector.score` per shard (normalise, shingle, MinHash, bands, signature)
  to feature files, then `cluster_pool` (DuckDB banding, verification, components);
- baseline: as datasketch's docs show: word 5-gram shingles, `MinHash.bulk`, `MinHashLSH`
  insert and query, union-find over the query results.

Then the clustering step alone, on the full run's feature files, each in its own subprocess
(so that peak RSS is the step's): this tree's staged `cluster_pool` (band-hash partitions as
work units, run serially here) at the default and at `--partitions`, and, with `--before
TREE`, the same step of another source tree (the one-pass clustering of main, say). Last, the
two ways to take connected components of the edge files: DuckDB min-label propagation (what
`cluster_pool` does) and a union-find over edge batches streamed from the files.

    .venv/bin/python benchmarks/dedup_speed.py --docs 1000000 --baseline-docs 20000 --num-perm 256 \
        --before /path/to/main
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARD_DOCS = 100_000


def sentences() -> list[str]:
    """Real sentences from three corpora."""
    texts = [
        (DATA / "tinystories_2mib" / "tinystories_sample.txt").read_text(),
        (DATA / "wikitext2_raw_test" / "wiki.test.raw").read_text(),
    ]
    with open(DATA / "imdb_test" / "imdb_test.jsonl", encoding="utf-8") as lines:
        texts += [json.loads(line)["text"].replace("<br />", " ") for line in lines]
    found = []
    for text in texts:
        found += [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if 20 < len(s.strip()) < 400]
    return found


def synthesise(out: Path, n: int, seed: int = 0) -> list[Path]:
    """Parquet shards of n ~1 KB documents, 5% near copies of earlier ones."""
    rng = np.random.default_rng(seed)
    pool = sentences()
    picks = rng.integers(0, len(pool), size=n * 12)
    files, docs, cursor = [], [], 0
    for i in range(n):
        if i > 10 and rng.random() < 0.05:
            parts = docs[int(rng.integers(max(0, len(docs) - 1000), len(docs)))].split(" | ")
            parts[int(rng.integers(0, len(parts)))] = pool[int(rng.integers(0, len(pool)))]
            docs.append(" | ".join(parts))
        else:
            parts, size = [], 0
            while size < 1000:
                sentence = pool[picks[cursor % len(picks)]]
                cursor += 1
                parts.append(sentence)
                size += len(sentence) + 3
            docs.append(" | ".join(parts))
        if len(docs) == SHARD_DOCS or i == n - 1:
            start = i + 1 - len(docs)
            table = pa.table(
                {
                    "doc_id": pa.array(np.arange(start, i + 1) + 1, pa.uint64()),
                    "text": docs,
                    "source": ["synthetic"] * len(docs),
                    "source_line": pa.array(np.arange(start, i + 1), pa.int64()),
                    "n_bytes": pa.array([len(d.encode()) for d in docs], pa.int64()),
                }
            )
            files.append(out / f"shard-{len(files):05d}.parquet")
            pq.write_table(table, files[-1])
            docs = []
    return files


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (VmHWM: getrusage's ru_maxrss survives exec,
    so a child would report its parent's peak when that was higher)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def cpu_seconds() -> float:
    """User and system CPU seconds of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_gristmill(files: list[Path], n: int, num_perm: int, work: Path) -> dict:
    """Score the first n documents' shards, then cluster them."""
    from gristmill.selectors.dedup import DedupSelector, cluster_pool

    selector = DedupSelector.from_params({"threshold": 0.8, "num_perm": num_perm})
    selector.score(pq.read_table(files[0]).slice(0, 10))  # load the compiled numba kernels
    start = time.perf_counter()
    features, done = [], 0
    for path in files:
        batches = pq.ParquetFile(path).iter_batches(batch_size=min(n - done, SHARD_DOCS))
        table = pa.Table.from_batches([next(batches)])
        done += table.num_rows
        out = work / f"features-{path.name}"
        pq.write_table(selector.score(table), out)
        features.append(out)
        if done >= n:
            break
    hashed = time.perf_counter()
    result = pq.read_table(
        cluster_pool([("bench", features, None)], selector.config, work / "scratch")
    )  # type: ignore[arg-type]
    end = time.perf_counter()
    return {
        "docs": done,
        "seconds": end - start,
        "hash_seconds": hashed - start,
        "cluster_seconds": end - hashed,
        "removed": int((result["score"].to_numpy() == 0).sum()),
        "peak_rss_mb": peak_rss_mb(),
        "cpu_seconds": cpu_seconds(),
    }


def run_cluster(work: Path, num_perm: int, partitions: int) -> dict:
    """The clustering step alone over the feature files in `work` (0 partitions: default)."""
    from gristmill.selectors.dedup import DedupSelector, cluster_pool

    params: dict = {"threshold": 0.8, "num_perm": num_perm}
    if partitions:
        params["partitions"] = partitions
    config = DedupSelector.from_params(params).config
    features = sorted(work.glob("features-*.parquet"))
    scratch = work / f"scratch-{os.getpid()}"
    start = time.perf_counter()
    result = pq.read_table(cluster_pool([("bench", features, None)], config, scratch))  # type: ignore[arg-type]
    seconds = time.perf_counter() - start
    edges = sorted(str(p) for p in scratch.glob("edges/**/*.parquet"))
    return {
        "docs": result.num_rows,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds(),
        "removed": int((result["score"].to_numpy() == 0).sum()),
        "checksum": int(pa.compute.sum(result["duplicate_of"].fill_null(0)).as_py()),
        "peak_rss_mb": peak_rss_mb(),
        "edge_files": edges,
        "edge_bytes": sum(os.path.getsize(p) for p in edges),
        "feature_bytes": sum(p.stat().st_size for p in features),
    }


def run_components(edge_files: list[str], docs: int, method: str, work: Path) -> dict:
    """Connected components of the edge files: DuckDB label propagation or union-find."""
    import duckdb

    start = time.perf_counter()
    if method == "duckdb":
        from gristmill.selectors.dedup import _components

        settings = {"memory_limit": "2GB", "temp_directory": str(work / "components")}
        with duckdb.connect(config=settings) as con:
            con.execute("create table edges as select node, root from read_parquet(?)",
                        [edge_files])  # fmt: skip
            labels = _components(con)
            row = con.execute(f"select count(*), sum(label) from {labels}").fetchone()
    else:
        parent = np.arange(docs, dtype=np.int64)
        for path in edge_files:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=1 << 20):
                union_edges(parent, batch.column(0).to_numpy(), batch.column(1).to_numpy())
        roots = resolve_roots(parent)
        linked = roots != np.arange(docs)
        linked[roots[linked]] = True  # a representative is in an edge too
        row = (int(linked.sum()), int(roots[linked].sum()))
    return {"method": method, "seconds": time.perf_counter() - start, "nodes": row[0],
            "label_sum": int(row[1]), "peak_rss_mb": peak_rss_mb()}  # fmt: skip


@numba.njit(cache=True)
def _find(parent: np.ndarray, x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@numba.njit(cache=True)
def union_edges(parent: np.ndarray, nodes: np.ndarray, roots: np.ndarray) -> None:
    """Union-find over one batch of edges; the smaller node stays the root (the label)."""
    for i in range(len(nodes)):
        a, b = _find(parent, nodes[i]), _find(parent, roots[i])
        if a != b:
            parent[max(a, b)] = min(a, b)


@numba.njit(cache=True)
def resolve_roots(parent: np.ndarray) -> np.ndarray:
    """Every node's component minimum."""
    for x in range(len(parent)):
        parent[x] = _find(parent, x)
    return parent


def run_baseline(files: list[Path], n: int, num_perm: int) -> dict:
    """datasketch as documented: MinHash.bulk, MinHashLSH insert + query, union-find."""
    from datasketch import MinHash, MinHashLSH

    texts: list[str] = []
    for path in files:
        texts += pq.read_table(path, columns=["text"])["text"].to_pylist()
        if len(texts) >= n:
            break
    texts = texts[:n]
    start = time.perf_counter()
    shingle_sets = []
    for text in texts:
        words = re.sub(r"[^\w\s]", "", text.lower()).split()
        shingle_sets.append(
            [" ".join(words[i : i + 5]).encode() for i in range(max(len(words) - 4, 1))]
        )
    signatures = MinHash.bulk(shingle_sets, num_perm=num_perm)
    lsh = MinHashLSH(threshold=0.8, num_perm=num_perm)
    for i, signature in enumerate(signatures):
        lsh.insert(i, signature)
    parent = list(range(len(texts)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, signature in enumerate(signatures):
        for j in lsh.query(signature):
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    removed = sum(1 for i in range(len(texts)) if find(i) != i)
    return {
        "docs": len(texts),
        "seconds": time.perf_counter() - start,
        "removed": removed,
        "peak_rss_mb": peak_rss_mb(),
        "cpu_seconds": cpu_seconds(),
    }


def main() -> None:
    """Synthesise, then time each system and step in its own subprocess; print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--baseline-docs", type=int, default=20_000)
    parser.add_argument("--num-perm", type=int, default=256, help="both systems")
    parser.add_argument("--partitions", type=int, default=16, help="besides the default")
    parser.add_argument("--before", help="a source tree whose clustering step to time too")
    parser.add_argument("--child", choices=["gristmill", "baseline", "cluster", "components"])
    parser.add_argument("--dir")
    parser.add_argument("--work")
    parser.add_argument("--method", choices=["duckdb", "union-find"])
    args = parser.parse_args()
    if args.child:
        directory = Path(args.dir)
        files = sorted(directory.glob("shard-*.parquet"))
        work = Path(args.work or tempfile.mkdtemp(dir=directory))
        work.mkdir(exist_ok=True)
        if args.child == "gristmill":
            result = run_gristmill(files, args.docs, args.num_perm, work)
        elif args.child == "cluster":
            result = run_cluster(work, args.num_perm, args.partitions)
        elif args.child == "components":
            edges = json.loads((work / "edge_files.json").read_text())
            result = run_components(edges, args.docs, args.method, work)
        else:
            result = run_baseline(files, args.docs, args.num_perm)
        print(json.dumps(result))
        return
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        synthesise(Path(tmp), args.docs)
        print(f"synthesised {args.docs} documents in {time.perf_counter() - began:.0f} s",
              file=sys.stderr)  # fmt: skip
        full = str(Path(tmp) / "work-full")

        def child(kind: str, n: int, *extra: str, tree: str | None = None) -> dict:
            command = [sys.executable, __file__, "--child", kind, "--docs", str(n), "--dir", tmp,
                       "--num-perm", str(args.num_perm), *extra]  # fmt: skip
            child_env = {**env, "PYTHONPATH": tree} if tree else env
            done = subprocess.run(command, env=child_env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{kind} {extra} failed:\n{done.stderr[-3000:]}")
            print(f"{kind} {' '.join(extra)}: done", file=sys.stderr)
            return json.loads(done.stdout.strip().splitlines()[-1])

        small = args.baseline_docs
        results = {
            "load_average_before": os.getloadavg(),
            "baseline_small": child("baseline", small),
            "gristmill_small": child("gristmill", small),
            "gristmill_full": child("gristmill", args.docs, "--work", full),
        }
        clustering = {}
        if args.before:
            clustering["before"] = child("cluster", args.docs, "--work", full, "--partitions", "0",
                                         tree=args.before)  # fmt: skip
        clustering["default_partitions"] = child("cluster", args.docs, "--work", full,
                                                 "--partitions", "0")  # fmt: skip
        clustering[f"{args.partitions}_partitions"] = child(
            "cluster", args.docs, "--work", full, "--partitions", str(args.partitions)
        )
        edges = clustering["default_partitions"]["edge_files"]
        (Path(full) / "edge_files.json").write_text(json.dumps(edges))
        components = {
            method: child("components", args.docs, "--work", full, "--method", method)
            for method in ("duckdb", "union-find")
        }
        results["load_average_after"] = os.getloadavg()
    for name in ("baseline_small", "gristmill_small", "gristmill_full"):
        result = results[name]
        result["docs_per_s"] = result["docs"] / result["seconds"]
        result["rss_bytes_per_doc"] = result["peak_rss_mb"] * 2**20 / result["docs"]
    ratio = results["gristmill_small"]["docs_per_s"] / results["baseline_small"]["docs_per_s"]
    results["speedup_same_size"] = ratio
    results["num_perm"] = args.num_perm
    for result in clustering.values():
        result.pop("edge_files", None)
    sums = {r["checksum"] for r in clustering.values()}
    results["clustering"] = {**clustering, "same_duplicates": len(sums) == 1}
    labels = {(r["nodes"], r["label_sum"]) for r in components.values()}
    results["components"] = {**components, "same_labels": len(labels) == 1}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
