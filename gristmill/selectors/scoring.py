"""Library steps of curation: score shards into the signal store, then select under a budget.

Flows schedule these; a notebook or a test can call them directly. `score_shard` is the
per-shard worker (writes one Parquet file, returns metadata); the rest run in the flow process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

import gristmill
from gristmill.errors import InputError
from gristmill.selectors.base import PoolFeatures, Scorer, Selector, SelectorContext, SetSelector
from gristmill.selectors.budget import Budget
from gristmill.selectors.selection import SelectOptions
from gristmill.selectors.tokens import TokenCounter
from gristmill.storage import catalog
from gristmill.storage.files import file_hash, write_parquet_atomic
from gristmill.storage.workspace import Workspace


@dataclass
class SignalInfo:
    """A stored per-shard signal file."""

    shard_hash: str
    path: str
    rows: int


@dataclass
class ScoringPlan:
    """Which shards of a corpus still need scores for a (signal, config hash)."""

    corpus: str
    signal: str
    config_hash: str
    todo: list[dict]
    stored: dict[str, str]


def plan_scoring(
    workspace: Workspace, corpus: str, scorer: Scorer, context: SelectorContext | None = None
) -> ScoringPlan:
    """Find the shards whose scores are not stored yet ("score once, select many times").

    The key is the scorer's shard key over the dependencies recorded in `context` (none without).
    """
    config_hash = scorer.signal_key("shard", context.dependencies if context else None)
    with workspace.catalog(read_only=True) as con:
        catalog.require_corpus(con, corpus)
        shards = catalog.shards(con, corpus)
        stored = catalog.signal_files(con, corpus, scorer.name, config_hash)
    stored = {h: p for h, p in stored.items() if workspace.absolute(p).exists()}
    todo = [s for s in shards if s["content_hash"] not in stored]
    return ScoringPlan(corpus, scorer.name, config_hash, todo, stored)


def score_shard(
    workspace_root: str, corpus: str, shard: dict, scorer: Scorer, config_hash: str
) -> SignalInfo:
    """Score one shard and store the result; the worker side of scoring."""
    workspace = Workspace(workspace_root)
    path = (
        workspace.signal_dir(corpus, scorer.name, config_hash) / f"{shard['content_hash']}.parquet"
    )
    if path.exists():
        # Written atomically under a key of scorer, version, settings, dependencies and the
        # shard's content: a run killed after the write but before anything recorded it
        # finds the scores complete, so they are served, not computed again.
        return SignalInfo(shard["content_hash"], workspace.relative(path), _rows(path))
    documents = pq.read_table(workspace.absolute(shard["path"]))
    scores = scorer.score(documents)
    # A set-based selector stores features here (signatures, embeddings); its scores come later.
    needs_score = scorer.produces_scores
    if scorer.per_document and (
        scores.num_rows != documents.num_rows
        or "doc_id" not in scores.column_names
        or (needs_score and "score" not in scores.column_names)
    ):
        raise RuntimeError(
            f"scorer {scorer.name} returned {scores.num_rows} rows for {documents.num_rows} "
            "documents (it must return doc_id and score for every document)"
        )
    write_parquet_atomic(scores, path)
    return SignalInfo(shard["content_hash"], workspace.relative(path), scores.num_rows)


def _rows(path: Path) -> int:
    """The row count of a Parquet file, from its footer."""
    return pq.ParquetFile(path).metadata.num_rows


def record_scores(
    workspace: Workspace, plan: ScoringPlan, infos: list[SignalInfo], config: dict[str, Any]
) -> None:
    """Record finished shard scores in the catalog (flow process only)."""
    with workspace.catalog() as con:
        con.execute("begin transaction")  # one commit for the batch, not one per shard
        for info in infos:
            catalog.record_signal(
                con, plan.corpus, plan.signal, plan.config_hash, info.shard_hash, info.path,
                info.rows, config,
            )  # fmt: skip
        con.execute("commit")


SET_SHARD = "set"


def set_signal_name(selector: Selector) -> str:
    """The signal under which a set-based selector's pool-level scores are stored."""
    return f"{selector.name}_set"


def score_set(
    workspace: Workspace,
    plan: ScoringPlan,
    selector: SetSelector,
    context: SelectorContext,
    parent: str | None = None,
) -> ScoringPlan:
    """Run a set-based selector over the whole pool (cached); a plan naming the pool-level scores.

    The set key covers the set-scoped settings and requirements (in `context.dependencies`) and
    the pool: the per-shard features' key, the shard contents and the parent selection's members,
    so adding shards or re-running a parent step recomputes it.
    """
    members = None
    if parent is not None:
        members = workspace.members_path(parent)
        if not members.exists():
            raise InputError(f"selection {parent!r} has no members file at {members}")
    pool = {
        "features": plan.config_hash,
        "shards": sorted(plan.stored),
        "parent_members": file_hash(members) if members else None,
    }
    context.dependencies.record("set", "pool", pool)
    set_hash = selector.signal_key("set", context.dependencies)
    signal = set_signal_name(selector)
    with workspace.catalog(read_only=True) as con:
        stored = catalog.signal_files(con, plan.corpus, signal, set_hash)
    path = stored.get(SET_SHARD)
    if path is None or not workspace.absolute(path).exists():
        out_dir = workspace.signal_dir(plan.corpus, signal, set_hash)
        scratch = out_dir / "scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        files = [workspace.absolute(p) for _, p in sorted(plan.stored.items())]
        scores = selector.score_set(context, PoolFeatures(files, members, scratch))
        target = out_dir / f"{SET_SHARD}.parquet"
        if isinstance(scores, Path):  # written by the selector under scratch: moved, not read
            columns, rows = pq.read_schema(scores).names, _rows(scores)
        else:
            columns, rows = scores.column_names, scores.num_rows
        if "doc_id" not in columns or "score" not in columns:
            raise RuntimeError(f"selector {selector.name} returned no doc_id/score columns")
        if isinstance(scores, Path):
            os.replace(scores, target)
        else:
            write_parquet_atomic(scores, target)
        path = workspace.relative(target)
        shutil.rmtree(scratch, ignore_errors=True)
        with workspace.catalog() as con:
            catalog.record_signal(
                con, plan.corpus, signal, set_hash, SET_SHARD, path, rows,
                {"features": plan.config_hash, "parent": parent},
            )  # fmt: skip
    return ScoringPlan(plan.corpus, signal, set_hash, [], {SET_SHARD: path})


def scoring_report(workspace: Workspace, signal_files: list[str]) -> Any:
    """What a selector reported about its scoring (variant, convergence), from signal metadata."""
    if not signal_files:
        return None
    metadata = pq.read_schema(workspace.absolute(signal_files[0])).metadata or {}
    raw = metadata.get(b"gristmill")
    return json.loads(raw) if raw else None


def _code_version() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(gristmill.__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"gristmill {gristmill.__version__}" + (f" ({sha})" if sha else "")


def token_plan(
    workspace: Workspace, corpus: str, budget: Budget | None, options: SelectOptions
) -> tuple[TokenCounter | None, ScoringPlan | None]:
    """The token-count scorer and its plan, when the budget counts tokens."""
    if budget is None or budget.counts != "tokens":
        return None, None
    counter = TokenCounter(options.tokenizer)
    return counter, plan_scoring(workspace, corpus, counter)


def signal_files(workspace: Workspace, plan: ScoringPlan) -> list[Path]:
    """A fully scored plan's files, in shard-hash order."""
    return [workspace.absolute(p) for _, p in sorted(plan.stored.items())]
