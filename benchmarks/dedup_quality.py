"""Near-dedup quality against exact Jaccard on planted near-duplicates of real documents.

Originals: IMDB test reviews of 150 to 400 words (../shared/data/imdb_test). Each original gets
one planted copy made by one edit at one rate: word substitutions, deletions or insertions
(rates 0.5% to 20% of the words), an added header and footer, a removed first and last
sentence, or a moved block of sentences (a "paragraph move"). The ground truth is the exact
Jaccard similarity of the two documents' shingle sets (word 5-grams of the normalised text,
the same shingles gristmill hashes), for every planted pair and for a sample of random pairs.

A pair is found when gristmill puts both documents in one cluster. Precision and recall of
found pairs are measured against "exact Jaccard >= threshold" over planted + random pairs.

    .venv/bin/python benchmarks/dedup_quality.py --originals 3000
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gristmill.selectors import minhash
from gristmill.selectors.dedup import DedupSelector, banding, cluster_pool

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RATES = [0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2]
HEADER = "Posted by reviewer {n} on the film discussion board. Rating and comments below."
FOOTER = "Was this review helpful? Sign in to vote. Permalink | Report abuse | Share {n}"


def originals(count: int, seed: int) -> list[str]:
    """IMDB reviews of 150 to 400 words, a random sample."""
    with open(DATA / "imdb_test" / "imdb_test.jsonl", encoding="utf-8") as lines:
        texts = [json.loads(line)["text"].replace("<br />", " ") for line in lines]
    texts = [t for t in texts if 150 <= len(t.split()) <= 400]
    rng = np.random.default_rng(seed)
    return [texts[i] for i in rng.choice(len(texts), count, replace=False)]


def plant(text: str, op: str, rate: float, rng: np.random.Generator, vocabulary: list[str]) -> str:
    """A near copy of text made by one kind of edit."""
    words = text.split()
    k = max(1, round(rate * len(words)))
    if op == "substitute":
        for i in rng.choice(len(words), k, replace=False):
            words[i] = vocabulary[int(rng.integers(len(vocabulary)))]
        return " ".join(words)
    if op == "delete":
        drop = set(rng.choice(len(words), k, replace=False).tolist())
        return " ".join(w for i, w in enumerate(words) if i not in drop)
    if op == "insert":
        for _ in range(k):
            word = vocabulary[int(rng.integers(len(vocabulary)))]
            words.insert(int(rng.integers(len(words) + 1)), word)
        return " ".join(words)
    sentences = re.split(r"(?<=[.!?])\s+", text)
    if op == "header_footer":
        n = int(rng.integers(1000))
        return f"{HEADER.format(n=n)}\n{text}\n{FOOTER.format(n=n)}"
    if op == "trim_ends":
        return " ".join(sentences[1:-1]) if len(sentences) > 3 else " ".join(words[10:-10])
    if op == "move_paragraph":
        if len(sentences) < 4:
            return " ".join(words[len(words) // 2 :] + words[: len(words) // 2])
        start = int(rng.integers(len(sentences) - 1))
        stop = min(len(sentences), start + max(1, len(sentences) // 4))
        block, rest = sentences[start:stop], sentences[:start] + sentences[stop:]
        at = int(rng.integers(len(rest) + 1))
        return " ".join(rest[:at] + block + rest[at:])
    raise ValueError(op)


def jaccard(a: str, b: str) -> float:
    """Exact Jaccard of the two texts' shingle sets."""
    x, y = set(minhash.word_shingles(a)), set(minhash.word_shingles(b))
    return len(x & y) / len(x | y) if x | y else 1.0


def main() -> None:
    """Plant, dedup at the threshold, report precision/recall and the curve per edit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=int, default=3000)
    parser.add_argument("--random-pairs", type=int, default=20000)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-perm", type=int, default=None, help="default: the selector's")
    parser.add_argument("--partitions", type=int, default=16, help="0: skip the partitioned run")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    base = originals(args.originals, args.seed)
    vocabulary = sorted({w for t in base[:500] for w in t.split()})
    edits = [(op, rate) for op in ("substitute", "delete", "insert") for rate in RATES]
    edits += [("header_footer", 0.0), ("trim_ends", 0.0), ("move_paragraph", 0.0)]
    texts, pairs = list(base), []
    for i, text in enumerate(base):
        op, rate = edits[i % len(edits)]
        texts.append(plant(text, op, rate, rng, vocabulary))
        pairs.append((i, len(texts) - 1, op, rate))
    n = len(texts)
    random_pairs = set()
    while len(random_pairs) < args.random_pairs:
        a, b = sorted(rng.integers(0, n, 2).tolist())
        if a != b and (a + args.originals != b):
            random_pairs.add((a, b))
    truth = {(a, b): jaccard(texts[a], texts[b]) for a, b, _, _ in pairs}
    truth.update({pair: jaccard(texts[pair[0]], texts[pair[1]]) for pair in random_pairs})

    table = pa.table(
        {
            "doc_id": pa.array(np.arange(n) + 1, pa.uint64()),
            "text": texts,
            "source": ["planted"] * n,
            "source_line": pa.array(np.arange(n), pa.int64()),
            "n_bytes": pa.array([len(t.encode()) for t in texts], pa.int64()),
        }
    )
    report = {"documents": n, "planted_pairs": len(pairs), "random_pairs": len(random_pairs)}
    common = {"threshold": args.threshold}
    if args.num_perm:
        common["num_perm"] = args.num_perm
    configs = [("gristmill", common), ("gristmill_no_verify", {**common, "verify": False})]
    if args.partitions:  # the staged clustering must not change a single cluster
        configs.append(("gristmill_partitioned", {**common, "partitions": args.partitions}))
    clusterings = {}
    for name, params in configs:
        selector = DedupSelector.from_params(params)
        with tempfile.TemporaryDirectory() as tmp:
            features = Path(tmp) / "features.parquet"
            began = time.perf_counter()
            pq.write_table(selector.score(table), features)
            result = pq.read_table(
                cluster_pool([("q", [features], None)], selector.config, Path(tmp) / "s")
            )  # type: ignore[arg-type]
            seconds = time.perf_counter() - began
        ids, clusters = result["doc_id"].to_pylist(), result["cluster"].to_pylist()
        cluster = dict(zip(ids, clusters, strict=True))
        clusterings[name] = cluster

        def found(a: int, b: int, cluster: dict = cluster) -> bool:
            ca, cb = cluster[a + 1], cluster[b + 1]
            return ca is not None and ca == cb

        tp = fp = fn = 0
        for pair, similarity in truth.items():
            hit, positive = found(*pair), similarity >= args.threshold
            tp += hit and positive
            fp += hit and not positive
            fn += positive and not hit
        curve: dict[str, dict] = defaultdict(dict)
        for a, b, op, rate in pairs:
            empty = {"pairs": 0, "jaccard": 0.0, "found": 0, "above": 0}
            cell = curve[op].setdefault(str(rate), empty)
            cell["pairs"] += 1
            cell["jaccard"] += truth[(a, b)]
            cell["found"] += found(a, b)
            cell["above"] += truth[(a, b)] >= args.threshold
        for cells in curve.values():
            for cell in cells.values():
                cell["jaccard"] = round(cell["jaccard"] / cell["pairs"], 3)
        report[name] = {
            "banding": list(banding(selector.config)),  # type: ignore[arg-type]
            "seconds": round(seconds, 2),
            "true_pairs": tp + fn,
            "found_pairs": tp + fp,
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / (tp + fn), 4) if tp + fn else None,
            "random_pairs_found": sum(found(*p) for p in random_pairs),
            "curve": curve,
        }
    if "gristmill_partitioned" in clusterings:
        same = clusterings["gristmill_partitioned"] == clusterings["gristmill"]
        report["gristmill_partitioned"]["same_clusters_as_default"] = same
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
