"""The perplexity_correlation selector on real text: zoo cost, scoring throughput, planted check.

Pool: the DSIR toy Pile sample (../shared/data/pile_toy_dsir, 1,000 documents, 14 subsets as
domains). One zoo is built with `build_zoo` (small GPT-2s on Dirichlet mixtures of the domains,
varied sizes and token counts) and scored once per model with the `lm_loss` signal. Then, for
each planted domain, the benchmark is that domain's held-out bits per byte (as the error
1 - 2^-bpb, written as a zoo CSV over the same checkpoints), and the figures are where the
estimate ranks the planted domain and what share of a 20% selection comes from it (random
selection gives the domain's share of the pool; the cap is the domain's size over the budget).

Scoring throughput is compared with the per-document loop of the perplexity-correlations
README (one document per forward pass, `model(input_ids, labels=input_ids)`), on the same
model and documents in the same run.

    nice -n 10 .venv/bin/python benchmarks/perplexity_correlation.py
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from target_common import DATA_DIR, ingest, write_corpus

from gristmill import pipeline
from gristmill.selectors.budget import Budget
from gristmill.selectors.lm_loss import LMLossConfig, LMLossSelector
from gristmill.selectors.perplexity_correlation import PerplexityCorrelationSelector
from gristmill.storage import catalog
from gristmill.storage.files import sql_files
from gristmill.storage.workspace import Workspace
from gristmill.training.data import heldout_mask
from gristmill.training.models import load_causal_lm, load_tokenizer
from gristmill.training.zoo import ZooConfig, benchmark_error, build_zoo, zoo_dir

CORPUS = "pile"


def _pile(path: Path) -> Path:
    rows = []
    with (DATA_DIR / "pile_toy_dsir" / "toy_pile_data.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            rows.append((record["metadata"]["pile_set_name"], record["contents"]))
    return write_corpus(path, rows)


def _documents(ws: Workspace) -> dict[str, np.ndarray]:
    with ws.catalog(read_only=True) as con:
        shards = [ws.absolute(s["path"]) for s in catalog.shards(con, CORPUS)]
    with duckdb.connect() as con:
        table = con.sql(
            f"select doc_id, domain, n_bytes, text from read_parquet({sql_files(shards)}) "
            "order by doc_id"
        ).to_arrow_table()
    return {c: table[c].to_numpy(zero_copy_only=False) for c in table.column_names}


def _per_document_baseline(model_path: str, texts: list[str]) -> tuple[int, float]:
    """Tokens and seconds of the README's loop: one document per forward pass."""
    tokenizer, model = load_tokenizer(model_path), load_causal_lm(model_path)
    model.eval()
    limit = int(model.config.n_positions)
    tokens, started = 0, time.perf_counter()
    with torch.inference_mode():
        for text in texts:
            ids = tokenizer(text, return_tensors="pt")["input_ids"][:, :limit]
            if ids.shape[1] < 2:
                continue
            loss = model(ids, labels=ids).loss.item()
            tokens += ids.shape[1]
            assert math.isfinite(loss)
    return tokens, time.perf_counter() - started


def main() -> None:
    """Build the zoo, measure scoring, run the planted check per domain, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--sizes", default="xs,s,m")
    parser.add_argument("--tokens", default="40000,80000")
    parser.add_argument("--planted", default="StackExchange,OpenWebText2,Pile-CC,Github")
    parser.add_argument("--budget", default="20%")
    parser.add_argument("--heldout-fraction", type=float, default=0.2)
    parser.add_argument("--baseline-docs", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # the scoring and baselines; the zoo sets its own
    planted = args.planted.split(",")
    scratch = args.workdir or Path(tempfile.mkdtemp(prefix="gristmill-pc-"))
    ws = Workspace(scratch / "ws")
    if not ws.exists():
        ingest(ws, CORPUS, _pile(scratch / "pile.jsonl"))
    config = ZooConfig(
        models=args.models, sizes=args.sizes.split(","),
        tokens=[int(t) for t in args.tokens.split(",")], target_domain=planted[0],
        heldout_fraction=args.heldout_fraction, vocab_size=1024, seq_len=128,
        threads=args.threads or None,
    )  # fmt: skip
    out = zoo_dir(ws, "bench")
    zoo = build_zoo(ws, CORPUS, out, config)
    cost = {
        "models": len(zoo["models"]),
        "params": [
            min(m["params"] for m in zoo["models"]),
            max(m["params"] for m in zoo["models"]),
        ],
        "train_tokens_total": sum(m["tokens"] for m in zoo["models"]),
        "train_seconds": sum(m["train_seconds"] for m in zoo["models"]),
        "eval_seconds": sum(m["eval_seconds"] for m in zoo["models"]),
        "wall_seconds": zoo["wall_seconds"],
        "device": zoo["device"],
        "cpu_threads": torch.get_num_threads(),
    }

    # Zoo scoring: every model over the whole pool, stored as lm_loss signals (cold).
    docs = _documents(ws)
    scorers = [LMLossSelector(LMLossConfig(model=str(out / m["model"]))) for m in zoo["models"]]
    scored_tokens, started = 0, time.perf_counter()
    signal = {}
    for scorer, model in zip(scorers, zoo["models"], strict=True):
        plan = pipeline.curate(ws, CORPUS, scorer).plan
        scorer.release()
        files = [ws.absolute(p) for p in plan.stored.values()]
        with duckdb.connect() as con:
            rows = con.sql(
                f"select bits_per_byte, n_tokens from read_parquet({sql_files(files)}) "
                "order by doc_id"
            ).to_arrow_table()
        signal[model["model"]] = rows["bits_per_byte"].to_numpy(zero_copy_only=False)
        scored_tokens += int(np.nansum(rows["n_tokens"].to_numpy(zero_copy_only=False)))
    scoring_seconds = time.perf_counter() - started
    texts = list(docs["text"][: args.baseline_docs])
    first = str(out / zoo["models"][0]["model"])
    base_tokens, base_seconds = _per_document_baseline(first, texts)
    batched_started = time.perf_counter()
    from gristmill.training.lm_scoring import score_documents

    batched = score_documents(load_causal_lm(first), load_tokenizer(first), texts)
    batched_seconds = time.perf_counter() - batched_started
    scoring = {
        "zoo_tokens": scored_tokens,
        "zoo_seconds": scoring_seconds,
        "zoo_tokens_per_s": scored_tokens / scoring_seconds,
        "same_docs_batched_tokens_per_s": float(batched.n_tokens.sum()) / batched_seconds,
        "same_docs_per_document_tokens_per_s": base_tokens / base_seconds,
    }
    scoring["ratio_vs_per_document"] = (
        scoring["same_docs_batched_tokens_per_s"] / scoring["same_docs_per_document_tokens_per_s"]
    )

    # The planted check, one benchmark (zoo CSV) per planted domain over the same checkpoints.
    held = heldout_mask(docs["doc_id"], args.heldout_fraction)
    domains = docs["domain"].astype(str)
    sizes = docs["n_bytes"].astype(np.float64)
    budget = Budget.parse(args.budget)
    checks = []
    for domain in planted:
        mask = held & (domains == domain)
        errors = []
        for model in zoo["models"]:
            bpb = signal[model["model"]]
            total = float(np.nansum(bpb[mask] * sizes[mask]) / sizes[mask].sum())
            errors.append(benchmark_error(total))
        csv_path = out / f"zoo-{domain.replace(' ', '_')}.csv"
        lines = ["model,error"] + [f"{m['model']},{e:.10f}" for m, e in
                                   zip(zoo["models"], errors, strict=True)]  # fmt: skip
        csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        selector = PerplexityCorrelationSelector.from_params({"zoo": str(csv_path)})
        name = f"pc-{domain.replace(' ', '_').replace('(', '').replace(')', '')}"
        started = time.perf_counter()
        record = pipeline.curate(ws, CORPUS, selector, budget=budget, name=name).record
        assert record is not None
        seconds = time.perf_counter() - started
        report = record["summary"]["scoring"]
        ranking = [d["domain"] for d in report["domains"]]
        kept = {d["domain"]: d["kept"] for d in record["summary"]["domains"]}
        in_domain = int((domains == domain).sum())
        allowed = budget.units(len(domains))
        checks.append({
            "planted": domain,
            "rank": ranking.index(domain) + 1,
            "top3": ranking[:3],
            "selected": record["n_selected"],
            "share_from_planted": kept.get(domain, 0) / max(1, record["n_selected"]),
            "max_share": min(1.0, in_domain / allowed),
            "random_share": in_domain / len(domains),
            "planted_docs_kept": kept.get(domain, 0) / in_domain,
            "classifier_train_accuracy": report["classifier"].get("train_accuracy"),
            "select_seconds": seconds,
            "zoo_csv_matches_build": (
                max(abs(a - float(m["error"])) for a, m in zip(errors, zoo["models"], strict=True))
                if domain == planted[0] else None
            ),
        })  # fmt: skip
    print(json.dumps({"cost": cost, "scoring": scoring, "planted": checks,
                      "workdir": str(scratch)}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
