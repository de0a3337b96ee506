"""Quality of the target selectors: do dsir and nudge pick the target's domain out of a mixture?

The pool is a mixture of eight real domains from ../shared/data (news, reviews, science abstracts,
stories, citation sentences, Python code, instructions, Wikipedia), `--per-domain` documents each.
For each target domain, `--target-size` of its documents are held out as the target corpus and
the rest stay in the pool. At a budget equal to that domain's count in the pool, the figure is
the share of selected documents that come from the target's domain (1.0 is perfect; random
selection gives the domain's share of the pool). The Pile toy sample (14 Pile subsets) is run the
same way with `--pile`.

    python benchmarks/target_selection.py --targets news science code reviews
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from target_common import DATA_DIR, ingest, load_domains, write_corpus

from gristmill import pipeline
from gristmill.selectors import registry
from gristmill.selectors.base import Selector
from gristmill.selectors.selection import SelectOptions
from gristmill.storage.workspace import Workspace

ARMS: dict[str, tuple[str, dict[str, Any], str | None]] = {
    # arm -> (selector, params, mode)
    "dsir topk": ("dsir", {}, "topk"),
    "dsir per-token topk": ("dsir", {"length_norm": "per_token"}, "topk"),
    "dsir gumbel": ("dsir", {}, "gumbel"),
    # The settings the README suggests for targets of tens of documents.
    "dsir small-target topk": (
        "dsir",
        {"prior": "pool", "smoothing": 0.3, "num_buckets": 50_000, "length_norm": "per_token"},
        "topk",
    ),
    "nudge hash": ("nudge", {}, None),
    "classifier": ("classifier", {}, None),
    "classifier fasttext": ("classifier", {"backend": "fasttext"}, None),
}


def build_selector(name: str, params: dict[str, Any]) -> Selector:
    """The selector of an arm, by registry name."""
    return registry.get(name).from_params(params)


def pile_domains() -> dict[str, list[str]]:
    """The DSIR toy Pile sample grouped by Pile subset."""
    out: dict[str, list[str]] = {}
    path = DATA_DIR / "pile_toy_dsir" / "toy_pile_data.jsonl"
    for line in path.open(encoding="utf-8"):
        record = json.loads(line)
        out.setdefault(record["metadata"]["pile_set_name"], []).append(record["contents"])
    return out


def run_target(
    root: Path, domains: dict[str, list[str]], target: str, target_size: int, arms: dict, seed: int
) -> list[dict[str, Any]]:
    """Build pool and target for one target domain, run every arm, return one row per arm."""
    ws = Workspace(root / target)
    held_out = domains[target][:target_size]
    pool = [(d, t) for d, docs in domains.items() for t in (docs[target_size:] if d == target
                                                           else docs)]  # fmt: skip
    random.Random(seed).shuffle(pool)
    ingest(ws, "pool", write_corpus(root / f"{target}-pool.jsonl", pool))
    ingest(ws, "target", write_corpus(root / f"{target}-target.jsonl",
                                      [(target, t) for t in held_out]))  # fmt: skip
    in_domain = sum(1 for d, _ in pool if d == target)
    rows = []
    for arm, (name, params, mode) in arms.items():
        start = time.perf_counter()
        record = pipeline.curate(
            ws, "pool", build_selector(name, params), budget=f"{in_domain}docs",
            name=arm.replace(" ", "-"), target="target",
            options=SelectOptions(mode=mode, seed=seed),
        ).record  # fmt: skip
        assert record is not None
        seconds = time.perf_counter() - start
        kept = {d["domain"]: d["kept"] for d in record["summary"]["domains"]}
        rows.append({
            "target": target, "arm": arm, "pool": len(pool), "budget": in_domain,
            "random": round(in_domain / len(pool), 3),
            "precision": round(kept.get(target, 0) / max(record["n_selected"], 1), 3),
            "seconds": round(seconds, 1),
            "sinkhorn": record["summary"].get("scoring", {}).get("sinkhorn"),
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", nargs="+", default=["news", "science", "code", "reviews"],
                        help="target domains, or 'all'")  # fmt: skip
    parser.add_argument("--arms", nargs="+", help=f"run only these arms (of {', '.join(ARMS)})")
    parser.add_argument("--per-domain", type=int, default=1500)
    parser.add_argument("--target-size", type=int, default=300)
    parser.add_argument("--pile", action="store_true", help="use the 14-domain Pile toy sample")
    parser.add_argument("--minilm", action="store_true", help="add a nudge arm with MiniLM")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--target-draw", type=int, metavar="N",
        help="targets: N-th seeded random draw of the domain's documents (default: its first "
        "ones; on the chunked Pile sample a random draw leaves the targets' sibling chunks in "
        "the pool, which flatters every arm)",
    )  # fmt: skip
    args = parser.parse_args()
    arms = dict(ARMS)
    if args.minilm:
        arms["nudge minilm"] = ("nudge", {"embedder": "minilm", "batch_size": 128}, None)
    if args.arms:
        unknown = sorted(set(args.arms) - set(arms))
        if unknown:
            parser.error(f"unknown arms {unknown}")
        arms = {a: arms[a] for a in args.arms}
    domains = pile_domains() if args.pile else load_domains(args.per_domain, args.seed)
    if args.targets == ["all"]:
        args.targets = list(domains)
    if args.target_draw is not None:  # the drawn documents first: run_target takes the first
        for target in args.targets:
            docs = domains[target]
            rng = np.random.default_rng(100 + args.target_draw)
            picked = set(rng.choice(len(docs), args.target_size, replace=False).tolist())
            drawn = [d for i, d in enumerate(docs) if i in picked]
            domains[target] = drawn + [d for i, d in enumerate(docs) if i not in picked]
    print({d: len(v) for d, v in domains.items()}, flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gristmill-target-") as scratch:
        for target in args.targets:
            rows += run_target(Path(scratch), domains, target, args.target_size, arms, args.seed)
    print("\n| target | pool | budget | random | " + " | ".join(arms) + " |")
    print("|---|---:|---:|---:|" + "---:|" * len(arms))
    for target in args.targets:
        cells = {r["arm"]: r for r in rows if r["target"] == target}
        first = next(iter(cells.values()))
        print(f"| {target} | {first['pool']} | {first['budget']} | {first['random']} | "
              + " | ".join(f"{cells[a]['precision']}" for a in arms) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
