"""Shared by the learnability and cartography benchmarks: ingest records into a fresh workspace
through the library, run a set selector as the curate flow does, and compute AUROC.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from target_common import ingest

from gristmill import pipeline
from gristmill.storage import catalog
from gristmill.storage.readers import IngestOptions
from gristmill.storage.workspace import Workspace


def single_threaded() -> None:
    """One torch thread: on a shared 2-core box, two OpenMP threads spin-wait on each other
    and a tiny model's step takes seconds instead of tens of milliseconds."""
    import torch

    torch.set_num_threads(1)


def ingest_records(root: Path, records: list[dict], corpus: str, text_field: str) -> Workspace:
    """Write records as JSONL and ingest them (every other field lands in meta)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{corpus}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    ws = Workspace(root / "ws")
    ingest(ws, corpus, path, IngestOptions(text_field=text_field, id_field="id"))
    return ws


def run_selector(
    ws: Workspace, corpus: str, selector: Any, budget: str, name: str
) -> tuple[pa.Table, float]:
    """Per-shard step, set step and selection; the set signal (with meta ids) and the seconds
    of preparing and scoring (the selection itself reuses those scores)."""
    start = time.perf_counter()
    plan = pipeline.curate(ws, corpus, selector, budget=budget).plan
    seconds = time.perf_counter() - start
    pipeline.curate(ws, corpus, selector, budget=budget, name=name)
    signal = pq.read_table(ws.absolute(next(iter(plan.stored.values()))))
    return signal, seconds


def meta_of(ws: Workspace, corpus: str) -> dict[int, dict]:
    """doc_id -> the document's meta fields."""
    with ws.catalog(read_only=True) as con:
        shards = [ws.absolute(s["path"]) for s in catalog.shards(con, corpus)]
    table = pa.concat_tables([pq.read_table(s, columns=["doc_id", "meta"]) for s in shards])
    return {
        d: json.loads(m)
        for d, m in zip(table["doc_id"].to_pylist(), table["meta"].to_pylist(), strict=True)
    }


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
