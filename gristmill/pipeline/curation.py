"""A whole curation step: prepare the selector, score the shards still missing (cached), count
tokens when the budget counts them, score the pool for a set selector, then select and record.

The selection itself runs in DuckDB over the signal files (`build_selection`): the candidates
and the members never pass through Python, and DuckDB spills to the selection's scratch
directory beyond `SelectOptions.memory_limit`, so the flow's memory does not grow with the pool.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import xxhash

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
    _code_version,
    plan_scoring,
    record_scores,
    score_set,
    scoring_report,
    signal_files,
    token_plan,
)
from gristmill.selectors.selection import CandidatePool, SelectOptions
from gristmill.storage import catalog
from gristmill.storage.files import file_hash, model_fingerprint, resolve_model_path, sql_files
from gristmill.storage.workspace import Workspace, validate_name


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
    curation = _curate(
        workspace, corpus, selector, params, budget, name, target, parent, options, recipe,
        work_map, current_only=False,
    )  # fmt: skip
    assert curation is not None
    return curation


def curate_if_current(
    workspace: Workspace | str | os.PathLike[str],
    corpus: str,
    selector: str,
    *,
    params: dict[str, Any] | None = None,
    budget: str | None = None,
    name: str | None = None,
    target: str | None = None,
    parent: str | None = None,
    options: SelectOptions | None = None,
    recipe: dict[str, Any] | None = None,
) -> Curation | None:
    """What `curate` would return when it has nothing to score and its selection would be
    the stored one, or None (nothing is changed: run `curate`). A recipe run skips an
    up-to-date step's sub-flow with it. Only per-shard selectors whose requirements are
    settings and corpora are checked (their planning does no work); others give None."""
    ws = as_workspace(workspace)
    if not ws.exists():  # `curate` says what is missing; a session would create the catalog
        return None
    with ws.write_lock(f"select {name or selector} from {corpus}"), ws.catalog_session():
        return _curate(
            ws, corpus, selector, params, budget, name, target, parent, options, recipe,
            serial_map, current_only=True,
        )  # fmt: skip


def _curate(
    workspace: Workspace | str | os.PathLike[str],
    corpus: str,
    selector: Selector | str,
    params: dict[str, Any] | None,
    budget: Budget | str | None,
    name: str | None,
    target: str | None,
    parent: str | None,
    options: SelectOptions | None,
    recipe: dict[str, Any] | None,
    work_map: WorkMap,
    current_only: bool,
) -> Curation | None:
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
        if current_only and (
            isinstance(selector, SetSelector)
            or not all(isinstance(r, Setting | CorpusRead) for r in requirements)
        ):
            return None  # resolving a signal or hashing a model is work
        reports: dict[str, RequirementReport] = {}
        resolve(ws, selector, context, requirements, "shard", work_map, reports)
        if not current_only:  # its settings and inputs are keyed: unchanged, they passed
            selector.prepare(context)
        features = plan_scoring(ws, corpus, selector, context)
        # Token counts first: a set selector's greedy may stop at a token budget.
        counter, sizes = token_plan(ws, corpus, parsed_budget, options)
        if current_only and (features.todo or (sizes is not None and sizes.todo)):
            return None
        reused = len(features.stored)
        scored = score_shards(ws, features, selector, f"score {corpus} with {label}", work_map)
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
                parent=parent, size_plan=sizes, recipe=recipe, unchanged_only=current_only,
            )  # fmt: skip
            if curation.record is None:
                return None
    return curation


def candidates_query(
    workspace: Workspace,
    corpus: str,
    signal_files: list[str],
    parent: str | None,
    size_files: list[str] | None,
    counts: str,
    extra_columns: tuple[str, ...],
) -> str:
    """doc_id, score, domain, n_bytes, size (budget units), reasons and `extra_columns` (stored)."""
    with workspace.catalog(read_only=True) as con:
        shards = workspace.shard_files(con, corpus)
        parent_path = None
        if parent is not None:
            parent_corpus = catalog.get_selection(con, parent)["corpus"]
            if parent_corpus != corpus:
                raise InputError(
                    f"selection {parent!r} is from corpus {parent_corpus!r}, not {corpus!r}"
                )
            parent_path = workspace.members_path(parent)
    if not shards:
        raise InputError(f"corpus {corpus!r} has no documents")
    signals = [workspace.absolute(p) for p in signal_files]
    stored = set(pq.read_schema(signals[0]).names) if signals else set()
    extra = "".join(f', s."{c}"' for c in ("reasons", *extra_columns) if c in stored)
    size = {"docs": "1.0::double", "bytes": "d.n_bytes::double"}.get(counts, "t.score::double")
    joins = ""
    if counts == "tokens" and size_files:
        tokens = [workspace.absolute(p) for p in size_files]
        joins += f" join read_parquet({sql_files(tokens)}) t on t.doc_id = d.doc_id"
    if parent_path is not None:
        joins += f" semi join read_parquet({sql_files([parent_path])}) p on p.doc_id = d.doc_id"
    return (
        f"select d.doc_id, s.score, d.domain, d.n_bytes, {size} as size{extra} "
        f"from read_parquet({sql_files(shards)}) d "
        f"join read_parquet({sql_files(signals)}) s on s.doc_id = d.doc_id{joins}"
    )


def _selection_database(scratch: Path, memory_limit: str) -> duckdb.DuckDBPyConnection:
    """A DuckDB database file in `scratch` that spills there beyond `memory_limit`."""
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        return duckdb.connect(
            str(scratch / "selection.duckdb"),
            config={"memory_limit": memory_limit, "temp_directory": str(scratch / "spill")},
        )
    except duckdb.Error as error:  # a bad setting, such as memory_limit=lots
        raise InputError(f"select memory_limit {memory_limit!r}: {error}") from None


def _summary(pool: CandidatePool) -> dict[str, Any]:
    """Per-domain kept/dropped counts and bytes, and the top reasons among dropped documents."""
    con = pool.con
    rows = catalog.rows(
        con,
        "select c.domain::varchar as domain, count(*)::bigint as candidates, "
        "count(k.doc_id)::bigint as kept, (count(*) - count(k.doc_id))::bigint as dropped, "
        "coalesce(sum(c.n_bytes) filter (where k.doc_id is not null), 0)::bigint as kept_bytes, "
        "coalesce(sum(c.n_bytes), 0)::bigint as candidate_bytes "
        "from candidates c left join chosen k using (doc_id) group by c.domain order by 1",
    )
    top: list[tuple[str, int]] = []
    if "reasons" in pool.columns:
        top = [tuple(r) for r in con.execute(
            "select reason, count(*) as n from (select unnest(c.reasons) as reason "
            "from candidates c anti join chosen using (doc_id)) "
            "group by reason order by n desc, reason limit 10"
        ).fetchall()]  # fmt: skip
    return {"domains": rows, "top_reasons": top}


@dataclass
class Selected:
    """What a selection query chose: counts, the budget's use and the summary by domain."""

    n_candidates: int
    n_selected: int
    bytes_selected: int
    units: float | None  # the budget in its unit (None: no budget)
    used: float  # the chosen documents' size in that unit
    pool: float  # every candidate's size in that unit
    summary: dict[str, Any]


def run_selection(
    query: str,
    members_path: Path,
    selector: Selector,
    budget: Budget | None,
    options: SelectOptions,
) -> Selected:
    """Select from the candidates `query` gives in a DuckDB database beside the members' folder
    (spilling there beyond options.memory_limit); write the members (doc_id, rank, weight)."""
    folder = members_path.parent
    scratch = folder.with_name(f".{folder.name}.scratch")
    shutil.rmtree(scratch, ignore_errors=True)  # an interrupted run's database
    con = _selection_database(scratch, options.memory_limit)
    try:
        con.execute(f"create table candidates as {query}")
        pool = CandidatePool(con)
        n_candidates = pool.count()
        units = budget.units(n_candidates) if budget else None
        selector.select_members(pool, units, options)
        folder.mkdir(parents=True, exist_ok=True)
        staged = members_path.with_name(f".{members_path.name}.tmp-{os.getpid()}")
        con.execute(
            f"copy (select doc_id, rank, 1.0::double as weight from chosen order by rank) "
            f"to {sql_files([staged])[1:-1]} (format parquet, compression zstd)"
        )
        os.replace(staged, members_path)
        summary = _summary(pool)
        pool_size, used, n_selected, bytes_selected = con.execute(
            "select (select coalesce(sum(size), 0)::double from candidates), "
            "coalesce(sum(c.size), 0)::double, count(*), coalesce(sum(c.n_bytes), 0)::bigint "
            "from chosen join candidates c using (doc_id)"
        ).fetchall()[0]
    finally:
        con.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return Selected(n_candidates, int(n_selected), int(bytes_selected), units, used, pool_size,
                    summary)  # fmt: skip


def build_selection(
    workspace: Workspace,
    name: str,
    corpus: str,
    selector: Selector,
    plan: ScoringPlan,
    budget: Budget | None,
    options: SelectOptions,
    parent: str | None = None,
    size_plan: ScoringPlan | None = None,
    recipe: dict[str, Any] | None = None,
    unchanged_only: bool = False,
) -> dict[str, Any] | None:
    """Select from the scored candidates in DuckDB, write the members and record the selection
    (`unchanged_only`: None instead, when the stored selection is not this one)."""
    validate_name("selection", name)
    signal_paths = sorted(plan.stored.values())
    counts = budget.counts if budget else "docs"
    size_files = sorted(size_plan.stored.values()) if size_plan else None
    query = candidates_query(
        workspace, corpus, signal_paths, parent, size_files, counts, selector.candidate_columns
    )
    members_path = workspace.members_path(name)
    parent_members = workspace.members_path(parent) if parent is not None else None
    with workspace.catalog(read_only=True) as con:
        corpus_version = catalog.corpus_version(con, corpus)
        previous = catalog.rows(con, "select * from selections where name = ?", [name])
    code_version = _code_version()  # a git call: once
    inputs = {
        "query": query,  # the shard, signal and size files: named by their contents
        "corpus_version": corpus_version,
        "parent_members": file_hash(parent_members) if parent_members else None,
        "selector": [selector.name, selector.version, selector.config_dict(), plan.config_hash],
        "budget": budget.text if budget else None,
        "options": options.model_dump(mode="json", exclude={"memory_limit"}),
        "code_version": code_version,
        "recipe": recipe,
    }
    inputs_key = xxhash.xxh3_128_hexdigest(json.dumps(inputs, sort_keys=True, default=str).encode())
    if previous and _unchanged(previous[0], inputs_key, members_path):
        # Nothing it depends on changed: the stored selection is this one (no query, no write).
        return {**previous[0], "summary": json.loads(previous[0]["summary"]), "unchanged": True}
    if unchanged_only:
        return None
    try:
        selected = run_selection(query, members_path, selector, budget, options)
    except ValueError as error:
        raise InputError(f"selection {name!r}: {error}") from None
    summary, units = selected.summary, selected.units
    summary["inputs_key"] = inputs_key
    report = scoring_report(workspace, signal_paths)
    if report is not None:
        summary["scoring"] = report
    summary["budget"] = {
        "budget": budget.text if budget else None,
        "counts": counts,
        "allowed": units,
        "used": selected.used,
        "pool": selected.pool,
        "exceeds_pool": bool(units is not None and units >= selected.pool),
    }
    with workspace.catalog() as con:
        record = {
            "name": name,
            "corpus": corpus,
            "parent": parent,
            "selector": selector.name,
            "signal": plan.signal,
            "config_hash": plan.config_hash,
            "config": json.dumps(selector.config_dict(), sort_keys=True),
            "budget": budget.text if budget else None,
            "mode": options.mode or selector.default_mode,
            "seed": options.seed,
            "n_candidates": selected.n_candidates,
            "n_selected": selected.n_selected,
            "bytes_selected": selected.bytes_selected,
            "corpus_version": corpus_version,
            "code_version": code_version,
            "recipe": json.dumps(recipe, default=str) if recipe else None,
            "summary": json.dumps(summary),
            "created_at": datetime.now(UTC).replace(tzinfo=None),
        }
        catalog.record_selection(con, record)
    return {**record, "summary": summary, "unchanged": False}


def _unchanged(record: dict[str, Any], inputs_key: str, members_path: Path) -> bool:
    """True when a stored selection was made from the same inputs and its members are intact."""
    summary = json.loads(record["summary"] or "{}")
    if summary.get("inputs_key") != inputs_key or not members_path.exists():
        return False
    return pq.ParquetFile(members_path).metadata.num_rows == record["n_selected"]
