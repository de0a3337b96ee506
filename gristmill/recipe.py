"""Recipes: YAML files that chain ingest, selector steps and materialisation, validated up front."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gristmill.errors import InputError
from gristmill.pipeline.export import MaterializeFormat
from gristmill.selectors import registry
from gristmill.selectors.base import describe_validation_error
from gristmill.selectors.budget import Budget
from gristmill.selectors.selection import SelectOptions
from gristmill.storage.readers import IngestOptions, is_url
from gristmill.storage.token_shards import TokenizeOptions
from gristmill.storage.workspace import validate_name
from gristmill.training.config import ExperimentSpec
from gristmill.training.zoo import ZooConfig


class IngestStep(IngestOptions):
    """Ingest files into a corpus (all reader options apply)."""

    corpus: str
    paths: list[str] = Field(min_length=1)

    @field_validator("corpus")
    @classmethod
    def _corpus_name(cls, value: str) -> str:
        return _checked_name("corpus", value)


class SelectStep(SelectOptions):
    """One selector step; it sees only what the previous step on its corpus kept."""

    name: str
    selector: str
    corpus: str | None = Field(None, description="default: the previous step's corpus")
    input: str | None = Field(
        None, description="a selection (or the corpus itself) to select from; default: previous"
    )
    params: dict[str, Any] = Field(default_factory=dict)
    budget: str | None = None
    target: str | None = None

    @field_validator("name")
    @classmethod
    def _selection_name(cls, value: str) -> str:
        return _checked_name("selection", value)

    @field_validator("budget", mode="before")
    @classmethod
    def _budget(cls, value: Any) -> Any:
        if value is None:
            return None
        try:
            Budget.parse(value)
        except InputError as error:
            raise ValueError(str(error)) from None
        return str(value)

    @model_validator(mode="after")
    def _selector(self) -> SelectStep:
        try:
            registry.get(self.selector).from_params(self.params)
        except InputError as error:
            raise ValueError(str(error)) from None
        return self

    def select_options(self) -> SelectOptions:
        """The selection options of this step."""
        return SelectOptions(**{k: getattr(self, k) for k in SelectOptions.model_fields})


class TransformStep(BaseModel):
    """Rewrite a corpus's text into a derived corpus (after ingest, before the select steps)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(description="the derived corpus")
    corpus: str | None = Field(
        None, description="the corpus to rewrite; default: the previous transform's output, "
        "else the first ingested corpus",
    )  # fmt: skip
    with_: str | list[str | dict[str, Any]] = Field(
        alias="with", description="transforms in order: names, or {name: {setting: value}}"
    )

    @field_validator("name")
    @classmethod
    def _corpus_name(cls, value: str) -> str:
        return _checked_name("corpus", value)

    @field_validator("with_")
    @classmethod
    def _transforms(cls, value: Any) -> Any:
        from gristmill.transforms.base import parse_specs

        try:
            for spec in parse_specs(value):
                spec.build()
        except InputError as error:
            raise ValueError(str(error)) from None
        return value

    def specs(self) -> list[dict[str, Any]]:
        """The transforms as plain specs (name and params), as the transform flow takes them."""
        from gristmill.transforms.base import parse_specs

        return [spec.model_dump() for spec in parse_specs(self.with_)]


class ZooStep(ZooConfig):
    """Build a model zoo for `perplexity_correlation` (before the select steps)."""

    name: str
    corpus: str

    @field_validator("name")
    @classmethod
    def _zoo_name(cls, value: str) -> str:
        return _checked_name("zoo", value)

    def zoo_config(self) -> ZooConfig:
        """The zoo settings of this step."""
        return ZooConfig(**self.model_dump(exclude={"name", "corpus"}))


class MaterializeStep(BaseModel):
    """Write a selection out."""

    model_config = ConfigDict(extra="forbid")

    selection: str
    out: str
    format: MaterializeFormat = "parquet"
    overwrite: bool = True
    # format tokens: how documents become token ids (see storage/token_shards.py)
    tokenizer: str | None = Field(None, description="a local tokenizer directory or model")
    bos: bool = False
    eos: bool = True
    shuffle_seed: int | None = Field(None, description="None: rank order")
    heldout_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    docs_per_shard: int = Field(50_000, ge=1)

    @model_validator(mode="after")
    def _tokenizer(self) -> MaterializeStep:
        if (self.format == "tokens") != (self.tokenizer is not None):
            raise ValueError("tokenizer: format tokens needs one, and only it takes one")
        return self

    def tokenize_options(self) -> TokenizeOptions | None:
        """The token settings of a `tokens` output (None for the text formats)."""
        if self.format != "tokens" or self.tokenizer is None:
            return None
        return TokenizeOptions(
            tokenizer=self.tokenizer, bos=self.bos, eos=self.eos, shuffle_seed=self.shuffle_seed,
            heldout_fraction=self.heldout_fraction, docs_per_shard=self.docs_per_shard,
        )  # fmt: skip


class Recipe(BaseModel):
    """A whole curation recipe."""

    model_config = ConfigDict(extra="forbid")

    name: str = "recipe"
    workspace: str | None = None
    ingest: list[IngestStep] = Field(default_factory=list)
    transform: list[TransformStep] = Field(default_factory=list)  # after ingest
    zoo: list[ZooStep] = Field(default_factory=list)  # model zoos, built after ingest
    select: list[SelectStep] = Field(default_factory=list)
    materialize: list[MaterializeStep] = Field(default_factory=list)
    experiment: ExperimentSpec | None = None  # run by `gristmill experiment`, after the steps

    @model_validator(mode="after")
    def _chain(self) -> Recipe:
        corpora = [step.corpus for step in self.ingest]
        names = set(corpora)
        for index, rewrite in enumerate(self.transform):
            if rewrite.corpus is None:
                rewrite.corpus = corpora[-1] if index else (corpora[0] if corpora else None)
            if rewrite.corpus is None:
                raise ValueError(f"transform[{index}].corpus: no corpus given and none ingested")
            if rewrite.name in names or rewrite.name == rewrite.corpus:
                raise ValueError(f"transform[{index}].name: {rewrite.name!r} is already used")
            corpora.append(rewrite.name)
            names.add(rewrite.name)
        # A select step without a corpus reads the last transform's output, else the first ingest's.
        default_corpus = self.transform[-1].name if self.transform else next(iter(corpora), None)
        previous: SelectStep | None = None
        for index, step in enumerate(self.select):
            if step.corpus is None:
                step.corpus = previous.corpus if previous else default_corpus
            if step.corpus is None:
                raise ValueError(f"select[{index}].corpus: no corpus given and none ingested")
            if step.input is None and previous is not None and previous.corpus == step.corpus:
                step.input = previous.name
            if step.name in names:
                raise ValueError(f"select[{index}].name: {step.name!r} is already used")
            names.add(step.name)
            previous = step
        # Which corpora and selections a workspace already holds is checked against it before
        # the recipe runs (gristmill.pipeline.checks.check_recipe): a recipe may materialise a
        # selection an earlier run made.
        return self

    def resolve_paths(self, base: Path) -> Recipe:
        """Make relative paths relative to the recipe file's directory."""
        for step in self.ingest:
            step.paths = [_resolved(p, base) for p in step.paths]
        for out in self.materialize:
            out.out = _resolved(out.out, base)
            if out.tokenizer is not None and ("/" in out.tokenizer or out.tokenizer[0] in ".~"):
                out.tokenizer = _resolved(out.tokenizer, base)  # a path, not a model's name
        if self.workspace is not None:
            self.workspace = _resolved(self.workspace, base)
        return self


def _checked_name(kind: str, value: str) -> str:
    try:
        return validate_name(kind, value)
    except InputError as error:
        raise ValueError(str(error)) from None


def _resolved(path: str, base: Path) -> str:
    if is_url(path):  # an fsspec URL (s3://, memory://, file://) is already absolute
        return path
    expanded = Path(path).expanduser()
    return str(expanded if expanded.is_absolute() else (base / expanded).resolve())


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file; InputError naming the file and each bad key."""
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"{file}: cannot read recipe ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise InputError(f"{file}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise InputError(f"{file}: a recipe is a mapping with ingest, select and materialize")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as error:
        raise InputError(describe_validation_error(error, f"{file}: ")) from None
    return recipe.resolve_paths(file.resolve().parent)
