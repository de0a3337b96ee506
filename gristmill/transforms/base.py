"""The transform interface and registry: pure functions over text that rewrite a document.

A transform has a name, a pydantic config and `apply(text, domain) -> Rewrite`: the new text and
counts of what it changed (masked e-mails, removed lines). A transform that needs a pass over
the whole corpus first (lines repeated across a domain's pages) also declares per-shard
statistics and a `fit` over them; the pipeline runs both through the same work map and cache as
scoring. Nothing here reads or writes the workspace.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError

from gristmill.errors import InputError
from gristmill.selectors import registry
from gristmill.selectors.base import describe_validation_error

ENTRY_POINT_GROUP = "gristmill.transforms"
_BUILTINS = {
    "pii": "gristmill.transforms.pii:PiiTransform",
    "normalize": "gristmill.transforms.normalize:NormalizeTransform",
    "lines": "gristmill.transforms.lines:LinesTransform",
}


class TransformConfig(BaseModel):
    """Base of every transform's config: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Rewrite:
    """A transform's result for one document: the new text and counts of what changed."""

    text: str
    changes: dict[str, int] = field(default_factory=dict)


class Transform(ABC):
    """Base class of transforms; subclasses set name, Config and implement apply."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    Config: ClassVar[type[TransformConfig]] = TransformConfig

    def __init__(self, config: TransformConfig) -> None:
        self.config = config

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Transform:
        """Build from user parameters; InputError naming each bad key."""
        try:
            return cls(cls.Config(**params))
        except ValidationError as error:
            raise InputError(describe_validation_error(error, f"transform {cls.name}: ")) from None

    def config_dict(self) -> dict[str, Any]:
        """The config as plain data: what keys the output and what the catalog records."""
        return self.config.model_dump(mode="json")

    @abstractmethod
    def apply(self, text: str, domain: str) -> Rewrite:
        """The document's new text (empty: the document is dropped) and what changed."""

    # -- the optional corpus pass -----------------------------------------------------------
    def needs_statistics(self) -> bool:
        """True when `apply` needs `fit` over the whole corpus's statistics first."""
        return False

    def statistics_settings(self) -> dict[str, Any]:
        """The settings the per-shard statistics depend on (they key the stored statistics)."""
        return {}

    def shard_statistics(self, documents: pa.Table) -> pa.Table:
        """Per-shard statistics for `fit` (only called when `needs_statistics()`)."""
        raise NotImplementedError(f"transform {self.name} keeps no corpus statistics")

    def fit(self, statistics: list[Path], documents: list[Path]) -> str:
        """Learn from every shard's statistics and the corpus's shard files; a fingerprint of
        what was learned (it keys the output, so a changed corpus rewrites every shard)."""
        raise NotImplementedError(f"transform {self.name} keeps no corpus statistics")


class TransformSpec(BaseModel):
    """A transform by name with its parameters, as a recipe or the CLI gives it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    params: dict[str, Any] = {}

    def build(self) -> Transform:
        """The transform object; InputError for an unknown name or a bad parameter."""
        return get(self.name).from_params(self.params)


SpecLike = TransformSpec | str | tuple[str, dict[str, Any]] | dict[str, Any]


def parse_specs(value: str | list[SpecLike]) -> list[TransformSpec]:
    """Transform specs from "pii,normalize,lines", a list of names, (name, params) pairs,
    {name: params} mappings, TransformSpec objects or their plain data ({"name", "params"});
    InputError for anything else."""
    items: list[Any] = (
        value
        if not isinstance(value, str)
        else [part.strip() for part in value.split(",") if part.strip()]
    )
    specs: list[TransformSpec] = []
    for item in items:
        if isinstance(item, TransformSpec):
            specs.append(item)
        elif isinstance(item, str) and item:
            specs.append(TransformSpec(name=item))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], dict):
            specs.append(TransformSpec(name=item[0], params=item[1]))
        elif isinstance(item, dict) and "name" in item:  # a TransformSpec as plain data
            try:
                specs.append(TransformSpec.model_validate(item))
            except ValidationError as error:
                raise InputError(describe_validation_error(error, "transform: ")) from None
        elif isinstance(item, dict) and len(item) == 1:
            name, params = next(iter(item.items()))
            if not isinstance(params, dict | None):
                raise InputError(f"transform {name!r}: its parameters must be a mapping")
            specs.append(TransformSpec(name=name, params=params or {}))
        else:
            raise InputError(
                f"not a transform: {item!r} (give a name, or a mapping of one name to its params)"
            )
    if not specs:
        raise InputError("no transforms given (e.g. --with pii,normalize,lines)")
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"transform {repeated[0]!r} is given twice; give each transform once")
    return specs


def with_params(specs: list[TransformSpec], pairs: dict[str, Any]) -> list[TransformSpec]:
    """Specs with "transform.key" settings added (the CLI's --param lines.min_words=3)."""
    extra: dict[str, dict[str, Any]] = {}
    names = {s.name for s in specs}
    for dotted, value in pairs.items():
        name, sep, key = dotted.partition(".")
        if not sep or not key:
            raise InputError(f"--param {dotted}: name the transform, as in lines.min_words=3")
        if name not in names:
            raise InputError(f"--param {dotted}: {name!r} is not among the transforms given")
        extra.setdefault(name, {})[key] = value
    return [TransformSpec(name=s.name, params={**s.params, **extra.get(s.name, {})}) for s in specs]


def chain_record(transforms: list[Transform]) -> list[dict[str, Any]]:
    """Name, version and settings of each transform in order: what the catalog keeps."""
    return [{"name": t.name, "version": t.version, "params": t.config_dict()} for t in transforms]


def chain_json(transforms: list[Transform], fitted: dict[str, str]) -> str:
    """The chain and what each fitted transform learned, as canonical JSON (hashed for keys)."""
    record = chain_record(transforms)
    for entry in record:
        if entry["name"] in fitted:
            entry["fitted"] = fitted[entry["name"]]
    return json.dumps(record, sort_keys=True)


def available() -> dict[str, str]:
    """Transform name -> 'module:Class' for every transform that can be used."""
    return registry.registered(_BUILTINS, ENTRY_POINT_GROUP)


def get(name: str) -> type[Transform]:
    """The transform class registered under `name`; InputError listing the known ones."""
    return registry.load("transform", name, available(), Transform)
