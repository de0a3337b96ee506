"""Speed of the target selectors.

dsir: documents per second per core, gristmill against the `data-selection` package (DSIR's
authors' code) on the same data, each in its own subprocess pinned to one core (`taskset -c 0`),
one after another in the same run. Both do the whole job: fit the target and raw n-gram models,
weigh every pool document, and resample (Gumbel-top-k) the budget. data-selection runs with
num_proc=1; gristmill runs its library path (prepare, score every shard, select).

nudge: end to end on `--nudge-pool` candidates and `--nudge-target` target documents with the
hash embedder, from ingested corpora to a selection (embed both, Sinkhorn, select), on all cores.

classifier: end to end with its defaults (10,000 target positives against 20,000 pool
negatives: two cross-fitted models drop the likely positives, then the final fit; score and
select from 100,000 documents), with dsir on the same corpora beside it, on all cores. Wall and
process CPU seconds are both printed (the box is shared).

    python benchmarks/target_speed.py --dsir-docs 12000 --nudge-pool 100000 --nudge-target 2000
    python benchmarks/target_speed.py --skip dsir --skip nudge   # the classifier only
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from target_common import ingest, load_domains, write_corpus

CHILD = r"""
import json, sys, time
sys.path.insert(0, {bench!r})
kind, root, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind == "data-selection":
    from data_selection import HashedNgramDSIR
else:
    from gristmill import pipeline
    from gristmill.selectors.dsir import DsirSelector
    from gristmill.selectors.selection import SelectOptions
start = time.perf_counter()  # imports excluded on both sides
if kind == "data-selection":
    dsir = HashedNgramDSIR([root + "/pool.jsonl"], [root + "/target.jsonl"], root + "/ds-cache",
                           num_proc=1, min_example_length=0)
    dsir.fit_importance_estimator(num_tokens_to_fit="all")
    dsir.compute_importance_weights()
    dsir.resample(out_dir=root + "/ds-out", num_to_sample=budget, cache_dir=root + "/ds-tmp")
else:
    selector = DsirSelector(DsirSelector.Config(hashing=kind.split("-")[1]))
    pipeline.curate(root + "/ws", "pool", selector, budget=f"{{budget}}docs", name=kind,
                    target="target", options=SelectOptions(mode="gumbel"))
print(json.dumps({{"seconds": time.perf_counter() - start}}))
"""


def run_child(kind: str, root: Path, budget: int) -> float:
    """Seconds one DSIR implementation takes in a fresh process pinned to core 0."""
    code = CHILD.format(bench=str(Path(__file__).resolve().parent))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code, kind, str(root), str(budget)],
        check=True, capture_output=True, text=True, env=env,
    )  # fmt: skip
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


def bench_dsir(root: Path, n_docs: int, n_target: int) -> list[dict]:
    """Pool of n_docs mixed documents, target of n_target news articles; both implementations."""
    from gristmill.storage.workspace import Workspace

    domains = load_domains(n_docs // 8 + n_target)
    target = [("news", t) for t in domains["news"][:n_target]]
    pool = [(d, t) for d, docs in domains.items()
            for t in (docs[n_target:] if d == "news" else docs[: n_docs // 8])]  # fmt: skip
    write_corpus(root / "pool.jsonl", pool)
    write_corpus(root / "target.jsonl", target)
    ws = Workspace(root / "ws")
    ingest(ws, "pool", root / "pool.jsonl")
    ingest(ws, "target", root / "target.jsonl")
    budget = len(pool) // 10
    size_mb = (root / "pool.jsonl").stat().st_size / 2**20
    rows = []
    for kind in ("data-selection", "gristmill-xxh3", "gristmill-sha256"):
        seconds = run_child(kind, root, budget)
        rows.append(
            {
                "system": kind,
                "docs": len(pool),
                "pool_mb": round(size_mb, 1),
                "seconds": round(seconds, 2),
                "docs_per_s_core": round(len(pool) / seconds),
            }
        )
        print(json.dumps(rows[-1]), flush=True)  # fmt: skip
    base = rows[0]["seconds"]
    for row in rows:
        row["speedup"] = round(base / row["seconds"], 1)
    return rows


def bench_nudge(root: Path, n_pool: int, n_target: int) -> dict:
    """nudge with the hash embedder, end to end, on n_pool candidates (sampled with repeats)."""
    from gristmill import pipeline
    from gristmill.selectors.nudge import NudgeSelector
    from gristmill.storage.workspace import Workspace

    domains = load_domains(30_000)
    rng = random.Random(0)
    target = [("news", t) for t in domains["news"][:n_target]]
    everything = [(d, t) for d, docs in domains.items()
                  for t in (docs[n_target:] if d == "news" else docs)]  # fmt: skip
    pool = [everything[rng.randrange(len(everything))] for _ in range(n_pool)]
    write_corpus(root / "npool.jsonl", pool)
    write_corpus(root / "ntarget.jsonl", target)
    ws = Workspace(root / "nws")
    start = time.perf_counter()
    ingest(ws, "pool", root / "npool.jsonl")
    ingest(ws, "target", root / "ntarget.jsonl")
    ingested = time.perf_counter()
    selector = NudgeSelector(NudgeSelector.Config())
    # Scoring alone first (pool and target embeddings, Sinkhorn), then the selection reusing it.
    pipeline.curate(ws, "pool", selector, budget="0.1", target="target")
    solved = time.perf_counter()
    curation = pipeline.curate(ws, "pool", selector, budget="0.1", name="near", target="target")
    assert curation.record is not None
    done = time.perf_counter()
    return {
        "candidates": n_pool, "target": n_target, "cores": os.cpu_count(),
        "ingest_s": round(ingested - start, 1),
        "embed_and_sinkhorn_s": round(solved - ingested, 1),
        "select_s": round(done - solved, 1), "total_without_ingest_s": round(done - ingested, 1),
        "sinkhorn": curation.record["summary"]["scoring"]["sinkhorn"],
    }  # fmt: skip


def bench_classifier(root: Path, n_pool: int, n_positive: int, backend: str) -> dict:
    """classifier end to end with its defaults: train on n_positive + pool negatives, score n_pool.

    The pool and the target are sampled with repeats from the mixture (news is the target);
    dsir runs on the same corpora for docs/s beside it. Ingest is excluded.
    """
    from gristmill import pipeline
    from gristmill.selectors.classifier import ClassifierSelector
    from gristmill.selectors.dsir import DsirSelector
    from gristmill.storage.workspace import Workspace

    domains = load_domains(30_000)
    rng = random.Random(1)
    news = domains["news"]
    target = [("news", news[rng.randrange(len(news))]) for _ in range(n_positive)]
    everything = [(d, t) for d, docs in domains.items() for t in docs]
    pool = [everything[rng.randrange(len(everything))] for _ in range(n_pool)]
    write_corpus(root / "cpool.jsonl", pool)
    write_corpus(root / "ctarget.jsonl", target)
    ws = Workspace(root / f"cws-{backend}")
    ingest(ws, "pool", root / "cpool.jsonl")
    ingest(ws, "target", root / "ctarget.jsonl")
    rows = {}
    for name, selector in (
        ("classifier", ClassifierSelector(ClassifierSelector.Config(backend=backend))),
        ("dsir", DsirSelector(DsirSelector.Config())),
    ):
        start, cpu = time.perf_counter(), time.process_time()
        curation = pipeline.curate(ws, "pool", selector, budget="0.1", name=f"speed-{name}",
                                   target="target")  # fmt: skip
        seconds = time.perf_counter() - start
        assert curation.record is not None
        rows[name] = {"seconds": round(seconds, 1), "cpu_s": round(time.process_time() - cpu, 1),
                      "docs_per_s": round(n_pool / seconds)}  # fmt: skip
        if name == "classifier":
            scoring = curation.record["summary"]["scoring"]
            rows[name]["trained_on"] = scoring["train_documents"]
            rows[name]["negatives"] = scoring["negatives"]
            rows[name]["heldout"] = scoring["heldout"]
    return {"pool": n_pool, "positives": n_positive, "backend": backend,
            "cores": os.cpu_count(), **rows}  # fmt: skip


def main() -> None:
    """Run both benchmarks and print JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsir-docs", type=int, default=12_000)
    parser.add_argument("--dsir-target", type=int, default=500)
    parser.add_argument("--nudge-pool", type=int, default=100_000)
    parser.add_argument("--nudge-target", type=int, default=2_000)
    parser.add_argument("--classifier-pool", type=int, default=100_000)
    parser.add_argument("--classifier-positives", type=int, default=10_000)
    parser.add_argument("--classifier-backend", choices=["linear", "fasttext"], default="linear")
    parser.add_argument(
        "--skip", choices=["dsir", "nudge", "classifier"], action="append", default=[]
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gristmill-speed-") as scratch:
        if "dsir" not in args.skip:
            for row in bench_dsir(Path(scratch), args.dsir_docs, args.dsir_target):
                print(json.dumps(row), flush=True)
        if "classifier" not in args.skip:
            print(json.dumps(bench_classifier(Path(scratch), args.classifier_pool,
                                              args.classifier_positives,
                                              args.classifier_backend)), flush=True)  # fmt: skip
        if "nudge" not in args.skip:
            print(json.dumps(bench_nudge(Path(scratch), args.nudge_pool, args.nudge_target)))


if __name__ == "__main__":
    main()
