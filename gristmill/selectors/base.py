"""The selector interface: a config, an optional global prepare, per-shard scores, a ranking."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, final

import duckdb
import pyarrow as pa
import xxhash
from pydantic import BaseModel, ConfigDict, ValidationError

from gristmill.errors import InputError
from gristmill.pipeline.map import WorkMap, serial_map
from gristmill.selectors.budget import Budget
from gristmill.selectors.requirements import Dependencies, Inputs, Requirement, Stage
from gristmill.selectors.selection import CandidatePool, Mode, Ranking, SelectOptions
from gristmill.storage.files import sql_files
from gristmill.storage.workspace import Workspace

if TYPE_CHECKING:  # storage builds the view and calls explain (a runtime import would cycle)
    from gristmill.storage.queries import SelectionView


class SelectorConfig(BaseModel):
    """Base of every selector's config: unknown keys are errors.

    Every field keys the per-shard signal unless listed in `set_fields` (keys only the set
    signal) or `unkeyed_fields` (changes no stored result: device, batch sizes, memory limits,
    ranking-only settings). An unlisted field over-invalidates; it never goes stale.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    set_fields: ClassVar[frozenset[str]] = frozenset()
    unkeyed_fields: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        known = set(cls.model_fields) | set(cls.model_computed_fields)
        unknown = sorted((cls.set_fields | cls.unkeyed_fields) - known)
        if unknown:
            raise TypeError(f"{cls.__name__}: key scopes name unknown fields {unknown}")

    def key_fields(self, stage: Stage) -> dict[str, Any]:
        """The settings that key a stage's signal (computed fields included)."""
        values = self.model_dump(mode="json")
        skipped = self.unkeyed_fields | (self.set_fields if stage == "shard" else frozenset())
        return {k: v for k, v in values.items() if k not in skipped}


@dataclass
class SelectorContext:
    """What a selector may look at while preparing: the workspace, the pool and the target."""

    workspace: Workspace
    corpus: str
    target: str | None = None
    seed: int = 0
    # The selection's budget and tokenizer, for set selectors whose greedy stops at the budget.
    budget: Budget | None = None
    tokenizer: str | None = None
    # Filled by the pipeline from the selector's requirements (never by the selector).
    inputs: Inputs = field(default_factory=Inputs)
    dependencies: Dependencies = field(default_factory=Dependencies)
    # The step's work map (threads, Prefect tasks on Ray/Dask): how set selectors run their units.
    work_map: WorkMap = serial_map


@dataclass
class Table:
    """Rows shown as one text table by `inspect` (every row has the same keys)."""

    title: str
    rows: list[dict[str, Any]]


@dataclass
class Section:
    """One part of a selector's explanation of a selection, for `inspect`.

    `data` appears under `key` in `inspect --json`; `tables` are what the text output shows;
    `shows` names the scoring-report keys those tables display, left out of the one-line
    scoring summary.
    """

    key: str
    data: Any
    tables: list[Table]
    shows: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Plain data: the key, the tables (title and rows) and the report keys shown."""
        tables = [{"title": t.title, "rows": t.rows} for t in self.tables]
        return {"key": self.key, "tables": tables, "shows": list(self.shows)}


def describe_validation_error(error: ValidationError, where: str) -> str:
    """One line per problem, each naming the offending key."""
    lines = []
    for problem in error.errors():
        key = ".".join(str(p) for p in problem["loc"]) or "(top level)"
        lines.append(f"{where}{key}: {problem['msg']}")
    return "\n".join(lines)


KEY_METHODS = ("signal_key", "cache_key", "set_key")


class Scorer(ABC):
    """Something that scores documents shard by shard, with results stored as a signal.

    The signal keys are computed here and only here (`signal_key`): a subclass states what its
    results depend on through its config's key scopes and its `requirements`, never by hand.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    # False for scorers that store features (embeddings, signatures) instead of a score column.
    produces_scores: ClassVar[bool] = True
    # False for scorers that store something other than one row per document (bucket counts).
    per_document: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        overridden = [m for m in KEY_METHODS if m in vars(cls)]
        if overridden:
            raise TypeError(
                f"{cls.__name__} defines {overridden[0]}: the base class owns the cache key; "
                "declare config key scopes and requirements() instead"
            )
        if "select" in vars(cls):
            # select(candidates) loaded every candidate into memory; it is no longer called.
            raise TypeError(
                f"{cls.__name__} defines select(): selection runs as DuckDB queries now; "
                "return a Ranking (SQL score and filter) from ranking(), or take from the pool "
                "in select_members()"
            )

    def config_dict(self) -> dict[str, Any]:
        """The settings that determine the scores."""
        return {}

    def key_settings(self, stage: Stage) -> dict[str, Any]:
        """The settings that key a stage's signal (a plain scorer: its config_dict)."""
        return self.config_dict()

    def requirements(self, context: SelectorContext) -> list[Requirement]:
        """What this scorer reads besides its own shards (other corpora, models, settings)."""
        return []

    def release(self) -> None:  # noqa: B027 (optional hook: most scorers load nothing)
        """Free what scoring loaded (a model), once its requirement is scored; default none."""

    @final
    def signal_key(self, stage: Stage, dependencies: Dependencies | None = None) -> str:
        """Hash of name, version, stage, the settings that key it and every dependency read."""
        recorded = (dependencies or Dependencies()).for_key(stage)
        payload = [self.name, self.version, stage, self.key_settings(stage), recorded]
        return xxhash.xxh3_64_hexdigest(json.dumps(payload, sort_keys=True, default=str).encode())

    @abstractmethod
    def score(self, documents: pa.Table) -> pa.Table:
        """Scores for a shard's documents: at least doc_id and score (higher = keep)."""


class Selector(Scorer):
    """Base class of selectors; subclasses set name, Config and implement score."""

    Config: ClassVar[type[SelectorConfig]] = SelectorConfig
    default_mode: ClassVar[Mode] = "topk"
    default_threshold: ClassVar[float | None] = None
    requires_target: ClassVar[bool] = False
    # Signal columns besides the score that this selector's ranking() reads, when stored.
    candidate_columns: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: SelectorConfig) -> None:
        self.config = config

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Selector:
        """Build from user parameters; InputError naming each bad key."""
        try:
            return cls(cls.Config(**params))
        except ValidationError as error:
            raise InputError(describe_validation_error(error, f"selector {cls.name}: ")) from None

    def config_dict(self) -> dict[str, Any]:
        """The config as plain data, as given (computed fields left out): what a record keeps."""
        computed = set(type(self.config).model_computed_fields)
        return self.config.model_dump(mode="json", exclude=computed)

    def key_settings(self, stage: Stage) -> dict[str, Any]:
        """The config fields scoped to key this stage."""
        return self.config.key_fields(stage)

    def prepare(self, context: SelectorContext) -> None:
        """Global fitting before scoring (target statistics, reference models); default none."""

    def explain(self, view: SelectionView) -> list[Section]:
        """What `inspect` shows of a selection besides its samples (clusters, regions); none."""
        return []

    def ranking(self, units: float | None, options: SelectOptions) -> Ranking:
        """What the selection ranks on, as SQL over the candidate columns: the stored score."""
        return Ranking()

    def select_members(
        self, pool: CandidatePool, units: float | None, options: SelectOptions
    ) -> None:
        """Take the members from `pool` under `units`, in rank order (a DuckDB query)."""
        mode = options.mode or self.default_mode
        if mode == "threshold" and options.threshold is None:
            options = options.model_copy(update={"threshold": self.default_threshold})
        pool.take(self.ranking(units, options), units, mode, options)


@dataclass
class PoolFeatures:
    """What a set-based selector sees after per-shard scoring: every shard's stored features."""

    files: list[Path]
    members: Path | None
    scratch: Path

    def _source(self) -> str:
        """The feature rows, members only if given, as `f`."""
        query = f"read_parquet({sql_files(self.files)}) f"
        if self.members is not None:
            query += (
                f" semi join read_parquet({sql_files([self.members])}) m on m.doc_id = f.doc_id"
            )
        return query

    def count(self) -> int:
        """Documents in the pool (members only, if given), without reading their features."""
        if not self.files:
            return 0
        with duckdb.connect() as con:
            return int(con.execute(f"select count(*) from {self._source()}").fetchall()[0][0])

    def read(self, columns: list[str]) -> pa.Table:
        """The named feature columns of the pool (members only, if given), ordered by doc_id."""
        selected = ", ".join(f'f."{c}"' for c in ["doc_id", *columns])
        with duckdb.connect() as con:
            query = f"select {selected} from {self._source()} order by f.doc_id"
            return con.sql(query).to_arrow_table()


class SetSelector(Selector):
    """A selector whose scores depend on the whole pool (duplicate clusters, transport potentials).

    `score` stores per-shard features (signatures, embeddings), cached by shard content like any
    signal; `score_set` then turns the features of the whole pool into doc_id and score (plus any
    columns worth keeping, such as a cluster id). The set result is keyed by the set-scoped
    settings, the set-stage requirements, the features and the parent selection.
    """

    produces_scores: ClassVar[bool] = False

    @abstractmethod
    def score_set(self, context: SelectorContext, pool: PoolFeatures) -> pa.Table | Path:
        """Scores for the pool: doc_id and score for each document in `pool` (members if given).

        A table, or a Parquet file written under `pool.scratch` when the scores are too many to
        hold (dedup's clusters at scale go from DuckDB to the file directly).
        """
