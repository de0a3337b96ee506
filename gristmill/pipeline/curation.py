"""A whole curation step: prepare the selector, score the shards still missing (cached), count
tokens when the budget counts them, score the pool for a set selector, then select and record."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from gristmill import progress
from gristmill.errors import InputError
from gristmill.pipeline.ingestion import as_workspace
from gristmill.pipeline.map import WorkMap, batched_by_time, serial_map
from gristmill.pipeline.units import ShardUnit, score_unit
from gristmill.selectors import registry
from gristmill.selectors.base import Scorer, Selector, SelectorContext, SetSelector
from gristmill.selectors.budget import Budget
from gristmill.selectors.requirements import (
    CorpusRead,
    Documents,
    Model,
    ModelFiles,
    Requirement,
    ScoredCorpus,
    Setting,
    Signal,
    Stage,
)
from gristmill.selectors.scoring import (
    ScoringPlan,
    build_selection,
    plan_scoring,
    record_scores,
    score_set,
    signal_files,
    token_plan,
)
from gristmill.selectors.selection import SelectOptions
from gristmill.storage import catalog
from gristmill.storage.files import model_fingerprint, resolve_model_path
from gristmill.storage.workspace import Workspace


@dataclass
class RequirementReport:
    """How a scored requirement went: its signal and key, and the shards scored or reused."""

    label: str
    corpus: str
    signal: str
    key: str
    scored: int
    reused: int


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
    requirements: dict[str, RequirementReport] = field(default_factory=dict)

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
    if not plan.todo:  # every score stored: no loop to show (in a flow, an API call less)
        return 0
    documents = {s["content_hash"]: int(s["rows"]) for s in plan.todo}
    bar = progress.track(label, sum(documents.values()), unit="docs")
    root = str(workspace.root)
    with workspace.catalog(read_only=True) as con:  # each shard's place, to name its task run
        number = {s["path"]: i for i, s in enumerate(catalog.shards(con, plan.corpus))}
    units = [
        ShardUnit(root, plan.corpus, s, scorer, plan.config_hash, number.get(s["path"], 0))
        for s in plan.todo
    ]
    scored = 0
    # The bar moves as each shard finishes, before the batching that records them.
    finished = progress.advancing(work_map(score_unit, units), bar,
                                  lambda info: documents[info.shard_hash])  # fmt: skip
    for batch in batched_by_time(finished):
        record_scores(workspace, plan, batch, scorer.config_dict())
        plan.stored.update({info.shard_hash: info.path for info in batch})
        scored += len(batch)
    bar.close()
    plan.todo = []
    return scored


def _score_requirement(
    workspace: Workspace,
    requirement: ScoredCorpus,
    selector: Scorer,
    context: SelectorContext,
    work_map: WorkMap,
) -> tuple[ScoringPlan, int]:
    """Score a requirement's corpus through the work map (cached); its plan and shards scored.

    Another scorer gets its own context for that corpus, its shard-stage requirements and its
    prepare; the selector itself (dedup against other corpora) is never prepared again.
    """
    scorer, corpus = requirement.scorer, requirement.corpus
    own = scorer is selector
    inner = context
    if not own:
        inner = SelectorContext(
            workspace, corpus, seed=context.seed, budget=context.budget,
            tokenizer=context.tokenizer, work_map=work_map,
        )  # fmt: skip
    try:
        if not own:
            nested = scorer.requirements(inner)
            _refuse_set_stage(scorer, nested, "a requirement's scorer")
            resolve(workspace, scorer, inner, nested, "shard", work_map)
            if isinstance(scorer, Selector):
                scorer.prepare(inner)
        plan = plan_scoring(workspace, corpus, scorer, inner)
        label = f"score {corpus} with {scorer.name} ({requirement.label})"
        scored = score_shards(workspace, plan, scorer, label, work_map)
    except InputError as error:
        if not requirement.error_prefix:
            raise
        raise InputError(f"{requirement.error_prefix}{error}") from None
    finally:
        if not own:
            scorer.release()  # one requirement's model in memory at a time
    return plan, scored


def _refuse_set_stage(scorer: Scorer, requirements: list[Requirement], what: str) -> None:
    """Set-stage needs exist only for a set selector's own set stage."""
    if any(r.stage == "set" for r in requirements):
        raise TypeError(f"{scorer.name}: {what} has set-stage requirements (use stage='shard')")


def resolve(
    workspace: Workspace,
    selector: Scorer,
    context: SelectorContext,
    requirements: list[Requirement],
    stage: Stage,
    work_map: WorkMap = serial_map,
    reports: dict[str, RequirementReport] | None = None,
) -> None:
    """Resolve a stage's requirements into `context.inputs`, recording each version read."""
    context.inputs.owner = selector.name
    record = context.dependencies.record
    for requirement in requirements:
        if requirement.stage != stage:
            continue
        label = requirement.label
        if isinstance(requirement, Setting):
            record(stage, label, requirement.value)  # the selector has the value already
        elif isinstance(requirement, CorpusRead):
            with workspace.catalog(read_only=True) as con:
                catalog.require_corpus(con, requirement.corpus)
                version = catalog.corpus_version(con, requirement.corpus)
                files = workspace.shard_files(con, requirement.corpus)
            record(stage, label, {"corpus": requirement.corpus, "version": version})
            context.inputs.values[label] = Documents(requirement.corpus, version, files)
        elif isinstance(requirement, ModelFiles):
            path = resolve_model_path(requirement.name, workspace.root / "models")
            fingerprint = model_fingerprint(path)
            record(stage, label, {"model": requirement.name, "fingerprint": fingerprint})
            context.inputs.values[label] = Model(path, fingerprint)
        else:
            plan, scored = _score_requirement(workspace, requirement, selector, context, work_map)
            files = signal_files(workspace, plan)
            version = {"corpus": plan.corpus, "signal": plan.signal, "key": plan.config_hash,
                       "shards": sorted(plan.stored)}  # fmt: skip
            record(stage, label, version)
            context.inputs.values[label] = Signal(plan.corpus, plan.signal, plan.config_hash, files)
            if reports is not None:
                reused = len(plan.stored) - scored
                reports[label] = RequirementReport(
                    label, plan.corpus, plan.signal, plan.config_hash, scored, reused
                )


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
        if target is not None:
            with ws.catalog(read_only=True) as con:
                catalog.require_corpus(con, target)
        elif selector.requires_target:
            raise InputError(f"selector {label!r} needs a target corpus (--target)")
        context = SelectorContext(
            ws, corpus, target, options.seed, parsed_budget, options.tokenizer, work_map=work_map
        )
        # Shard-stage requirements key the per-shard signal: resolved before prepare reads them.
        requirements = selector.requirements(context)
        if not isinstance(selector, SetSelector):  # nothing would resolve or key them
            _refuse_set_stage(selector, requirements, "a per-shard selector")
        reports: dict[str, RequirementReport] = {}
        resolve(ws, selector, context, requirements, "shard", work_map, reports)
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
            resolve(ws, selector, context, requirements, "set", work_map, reports)
            plan = score_set(ws, features, selector, context, parent=parent)
        curation = Curation(
            corpus, label, plan, features, sizes, scored, reused, sizes_scored, context,
            requirements=reports,
        )  # fmt: skip
        if name is not None:
            curation.record = build_selection(
                ws, name, corpus, selector, plan, parsed_budget, options,
                parent=parent, size_plan=sizes, recipe=recipe,
            )  # fmt: skip
    return curation
