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

    .venv/bin/python benchmarks/dedup_speed.py --docs 1000000 --baseline-docs 20000 --num-perm 256
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
    """Peak resident memory of this process in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    result = cluster_pool([("bench", features, None)], selector.config, work / "scratch")  # type: ignore[arg-type]
    end = time.perf_counter()
    return {
        "docs": done,
        "seconds": end - start,
        "hash_seconds": hashed - start,
        "cluster_seconds": end - hashed,
        "removed": int((result["score"].to_numpy() == 0).sum()),
        "peak_rss_mb": peak_rss_mb(),
    }


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
    }


def main() -> None:
    """Synthesise, then time each system in its own subprocess; print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--baseline-docs", type=int, default=20_000)
    parser.add_argument("--num-perm", type=int, default=256, help="both systems")
    parser.add_argument("--child", choices=["gristmill", "baseline"])
    parser.add_argument("--dir")
    args = parser.parse_args()
    if args.child:
        directory = Path(args.dir)
        files = sorted(directory.glob("shard-*.parquet"))
        if args.child == "gristmill":
            work = Path(tempfile.mkdtemp(dir=directory))
            result = run_gristmill(files, args.docs, args.num_perm, work)
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

        def child(kind: str, n: int) -> dict:
            command = [sys.executable, __file__, "--child", kind, "--docs", str(n), "--dir", tmp,
                       "--num-perm", str(args.num_perm)]  # fmt: skip
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            return json.loads(done.stdout.strip().splitlines()[-1])

        small = args.baseline_docs
        results = {
            "baseline_small": child("baseline", small),
            "gristmill_small": child("gristmill", small),
            "gristmill_full": child("gristmill", args.docs),
        }
    for result in results.values():
        result["docs_per_s"] = result["docs"] / result["seconds"]
        result["rss_bytes_per_doc"] = result["peak_rss_mb"] * 2**20 / result["docs"]
    ratio = results["gristmill_small"]["docs_per_s"] / results["baseline_small"]["docs_per_s"]
    results["speedup_same_size"] = ratio
    results["num_perm"] = args.num_perm
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
