"""A whole curation step: prepare the selector, score the shards still missing (cached), count
tokens when the budget counts them, score the pool for a set selector, then select and record."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from gristmill import progress
from gristmill.errors import InputError
from gristmill.pipeline.ingestion import as_workspace
from gristmill.pipeline.map import WorkMap, batched_by_time, serial_map
from gristmill.pipeline.units import ShardUnit, score_unit
from gristmill.selectors import registry
from gristmill.selectors.base import Scorer, Selector, SelectorContext, SetSelector
from gristmill.selectors.budget import Budget
from gristmill.selectors.scoring import (
    ScoringPlan,
    build_selection,
    plan_scoring,
    record_scores,
    score_set,
    token_plan,
)
from gristmill.selectors.selection import SelectOptions
from gristmill.storage import catalog
from gristmill.storage.workspace import Workspace


@dataclass
class Curation:
    """What a curation step did: the plans it scored, how many shards, and the selection made."""

    corpus: str
    selector: str
    plan: ScoringPlan  # the scores selected on: the set signal for a set selector
    features: ScoringPlan  # the per-shard signal
    sizes: ScoringPlan | None  # token counts, when the budget counts tokens
    scored: int
    reused: int
    sizes_scored: int
    context: SelectorContext
    record: dict[str, Any] | None = None  # None when only scoring

    def as_dict(self) -> dict[str, Any]:
        """The curate flow's result (the keys the CLI and the recipe flow read)."""
        result: dict[str, Any] = {
            "corpus": self.corpus,
            "selector": self.selector,
            "signal": self.plan.signal,
            "config_hash": self.plan.config_hash,
            "shards_scored": self.scored,
            "shards_reused": self.reused,
        }
        if self.record is not None:
            result["selection"] = self.record
        return result


def score_shards(
    workspace: Workspace, plan: ScoringPlan, scorer: Scorer, label: str, work_map: WorkMap
) -> int:
    """Score the shards a plan lists as missing, recording them in batches; how many were."""
    bar = progress.track(label, len(plan.todo))
    root = str(workspace.root)
    units = [ShardUnit(root, plan.corpus, s, scorer, plan.config_hash) for s in plan.todo]
    scored = 0
    for batch in batched_by_time(work_map(score_unit, units)):
        record_scores(workspace, plan, batch, scorer.config_dict())
        plan.stored.update({info.shard_hash: info.path for info in batch})
        scored += len(batch)
        bar.advance(len(batch))
    bar.close()
    plan.todo = []
    return scored


def curate(
    workspace: Workspace | str | os.PathLike[str],
    corpus: str,
    selector: Selector | str,
    *,
    params: dict[str, Any] | None = None,
    budget: Budget | str | None = None,
    name: str | None = None,
    target: str | None = None,
    parent: str | None = None,
    options: SelectOptions | None = None,
    recipe: dict[str, Any] | None = None,
    work_map: WorkMap = serial_map,
) -> Curation:
    """Score a corpus with a selector (cached) and, given a name, select under a budget."""
    options = options or SelectOptions()
    label = selector if isinstance(selector, str) else selector.name
    if isinstance(selector, str):
        selector = registry.get(selector).from_params(params or {})
    elif params:
        raise InputError("params are for a selector given by name, not a selector object")
    parsed_budget = Budget.parse(budget) if isinstance(budget, str) else budget
    ws = as_workspace(workspace)
    with ws.write_lock(f"select {name or label} from {corpus}"):
        target_version = None
        if target is not None:
            with ws.catalog(read_only=True) as con:
                catalog.require_corpus(con, target)
                target_version = catalog.corpus_version(con, target)
        elif selector.requires_target:
            raise InputError(f"selector {label!r} needs a target corpus (--target)")
        context = SelectorContext(
            ws, corpus, target, options.seed, target_version, parsed_budget, options.tokenizer
        )
        selector.prepare(context)
        features = plan_scoring(ws, corpus, selector, context)
        reused = len(features.stored)
        scored = score_shards(ws, features, selector, f"score {corpus} with {label}", work_map)
        # Token counts first: a set selector's greedy may stop at a token budget.
        counter, sizes = token_plan(ws, corpus, parsed_budget, options)
        sizes_scored = 0
        if counter is not None and sizes is not None:
            sizes_scored = score_shards(ws, sizes, counter, f"count tokens in {corpus}", work_map)
        plan = features
        if isinstance(selector, SetSelector):
            plan = score_set(ws, features, selector, context, parent=parent)
        curation = Curation(
            corpus, label, plan, features, sizes, scored, reused, sizes_scored, context
        )
        if name is not None:
            curation.record = build_selection(
                ws, name, corpus, selector, plan, parsed_budget, options,
                parent=parent, size_plan=sizes, recipe=recipe,
            )  # fmt: skip
    return curation
