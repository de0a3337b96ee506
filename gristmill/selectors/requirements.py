"""What a selector needs besides its own per-shard pass, and what the pipeline hands back.

A selector returns requirements from `requirements(context)`; the pipeline resolves them (scoring
other corpora through the same work map and cache as any shard), records each one's version in
`context.dependencies` and its result in `context.inputs`. The base class hashes the dependencies
into the signal keys, so a changed target, eval set or model invalidates exactly what read it.

Stage "shard": the dependency keys the per-shard signal (resolved before `prepare`). Stage
"set": it keys only the set signal (resolved before `score_set`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from gristmill.selectors.base import Scorer

Stage = Literal["shard", "set"]


@dataclass(frozen=True)
class ScoredCorpus:
    """Another corpus (or the pool) scored by `scorer`: its stored signal files."""

    label: str
    corpus: str
    scorer: Scorer
    stage: Stage = "set"
    error_prefix: str = ""  # put before an InputError raised while scoring (e.g. a zoo CSV line)


@dataclass(frozen=True)
class CorpusRead:
    """Another corpus's documents, read directly (its shard files)."""

    label: str
    corpus: str
    stage: Stage = "shard"


@dataclass(frozen=True)
class ModelFiles:
    """A model (workspace model name, local path or hub name): resolved path and content hash."""

    label: str
    name: str
    stage: Stage = "shard"


@dataclass(frozen=True)
class Setting:
    """A run setting the result depends on (seed, budget): recorded as given."""

    label: str
    value: Any
    stage: Stage = "set"


Requirement = ScoredCorpus | CorpusRead | ModelFiles | Setting


@dataclass(frozen=True)
class Signal:
    """A scored requirement: the corpus, signal name, key and files (sorted by shard hash)."""

    corpus: str
    name: str
    key: str
    files: list[Path]


@dataclass(frozen=True)
class Documents:
    """A read corpus: its version and shard files (catalog order)."""

    corpus: str
    version: str | None
    files: list[Path]


@dataclass(frozen=True)
class Model:
    """A resolved model: the path to load and its content fingerprint."""

    path: str
    fingerprint: str | None


@dataclass
class Dependencies:
    """Every dependency's version, by stage and label, as the keys hash them."""

    shard: dict[str, Any] = field(default_factory=dict)
    set: dict[str, Any] = field(default_factory=dict)

    def record(self, stage: Stage, label: str, version: Any) -> None:
        """Note what a dependency was (a corpus version, a signal key, a model hash)."""
        (self.shard if stage == "shard" else self.set)[label] = version

    def for_key(self, stage: Stage) -> dict[str, Any]:
        """What keys a stage: the shard dependencies, plus the set ones for the set stage."""
        if stage == "shard":
            return dict(self.shard)
        return {"shard": dict(self.shard), "set": dict(self.set)}


@dataclass
class Inputs:
    """The resolved requirements, by label; reading an undeclared one fails loudly."""

    owner: str = ""
    values: dict[str, Any] = field(default_factory=dict)

    def _get(self, label: str, kind: type) -> Any:
        value = self.values.get(label)
        if not isinstance(value, kind):
            raise RuntimeError(
                f"selector {self.owner} read input {label!r} it did not declare in requirements()"
            )
        return value

    def signal(self, label: str) -> Signal:
        """A ScoredCorpus requirement's stored signal."""
        return self._get(label, Signal)

    def documents(self, label: str) -> Documents:
        """A CorpusRead requirement's documents."""
        return self._get(label, Documents)

    def model(self, label: str) -> Model:
        """A ModelFiles requirement's resolved model."""
        return self._get(label, Model)
