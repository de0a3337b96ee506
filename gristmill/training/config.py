"""Settings of the training stage as pydantic models: training runs, model presets, experiments.

Kept free of torch and transformers so that validating a recipe stays cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from gristmill.devices import Device
from gristmill.errors import InputError
from gristmill.storage.workspace import validate_name


class TrainConfig(BaseModel):
    """Settings of one training run (sizes in sequences and steps; one step = one update)."""

    model_config = ConfigDict(extra="forbid")

    seq_len: int = Field(128, ge=8)
    micro_batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(1e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float | None = 1.0
    max_steps: int | None = Field(None, ge=1, description="default: from the token budget")
    tokens: int | None = Field(None, ge=1, description="token budget (fixes the step count)")
    seed: int = 0
    device: Device = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    compile: bool = False
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints")
    log_every: int = Field(10, ge=1)

    def steps_for(self, tokens_per_step: int) -> int:
        """Number of optimizer steps: max_steps, or the token budget in whole steps (at least 1)."""
        if self.max_steps is not None:
            return self.max_steps
        if self.tokens is None:
            raise ValueError("a training run needs max_steps or a token budget")
        return max(1, math.ceil(self.tokens / tokens_per_step))


@dataclass(frozen=True)
class Preset:
    """An architecture and size that gristmill can build from scratch, offline."""

    family: str  # "gpt2" or "llama"
    n_layer: int
    n_head: int
    n_embd: int
    max_positions: int
    vocab_size: int  # the tokenizer's target size
    intermediate_size: int | None = None  # llama MLP width


PRESETS: dict[str, Preset] = {
    "tiny": Preset("gpt2", n_layer=2, n_head=2, n_embd=64, max_positions=256, vocab_size=1024),
    "small": Preset("gpt2", n_layer=4, n_head=4, n_embd=256, max_positions=512, vocab_size=8192),
    "gpt2-124m": Preset(
        "gpt2", n_layer=12, n_head=12, n_embd=768, max_positions=1024, vocab_size=50304
    ),
    "llama-tiny": Preset(
        "llama",
        n_layer=2,
        n_head=2,
        n_embd=64,
        max_positions=256,
        vocab_size=1024,
        intermediate_size=176,
    ),
    "llama-small": Preset(
        "llama",
        n_layer=4,
        n_head=4,
        n_embd=256,
        max_positions=512,
        vocab_size=8192,
        intermediate_size=688,
    ),
}


def known_preset(name: str) -> str:
    """`name` if it is a model preset; ValueError (a config error) listing them otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (presets: {', '.join(PRESETS)})")
    return name


# A config field naming a model preset.
PresetName = Annotated[str, AfterValidator(known_preset)]


BUILTIN_ARMS = ("none", "random", "full")


class BaseSpec(BaseModel):
    """The base model: loaded (`model`) or pretrained from a preset on a workspace corpus."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="HF name, local path or workspace model name")
    preset: PresetName = "tiny"
    corpus: str | None = Field(None, description="pretraining corpus (default: the pool)")
    name: str = Field("base", description="saved as models/<name> in the workspace")
    vocab_size: int | None = Field(None, ge=64)
    trust_remote_code: bool = False
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(max_steps=200))

    @field_validator("name")
    @classmethod
    def _model_name(cls, value: str) -> str:
        return _checked("model", value)


class TaskSpec(BaseModel):
    """The downstream task: classification (text + label) or instruction SFT (prompt/response)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["classification", "sft"]
    corpus: str
    label_field: str = Field("label", description="classification: the meta field of the label")
    prompt_template: str = Field(
        "{instruction}\n{input}\n",
        description="sft: the prompt, formatted with the document's meta fields; "
        "the document text is the response",
    )
    test_corpus: str | None = Field(
        None, description="the test set as its own corpus (default: test_fraction of corpus)"
    )
    test_fraction: float = Field(0.2, gt=0, lt=1)
    max_length: int = Field(128, ge=8)
    max_train_examples: int | None = Field(None, ge=1)
    max_test_examples: int | None = Field(None, ge=1)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(max_steps=100))


class ExperimentSpec(BaseModel):
    """Arms, budget, seeds, base model, task and evaluation of one experiment."""

    model_config = ConfigDict(extra="forbid")

    name: str = "experiment"
    vary: Literal["continued", "finetune"] = Field(
        "continued",
        description="what the arms change: the continued-pretraining data (over `pool`), or "
        "the fine-tuning set (over the task's training examples, from a fixed base)",
    )
    pool: str | None = Field(
        None, description="corpus or selection behind the `full` and `random` arms"
    )
    arms: list[str] = Field(default_factory=lambda: list(BUILTIN_ARMS), min_length=1)
    tokens: int | None = Field(
        None, ge=1, description="continued-pretraining tokens, the same for every arm"
    )
    random_tokens: int | None = Field(
        None, ge=1, description="size of the random arm (default: the largest selection arm)"
    )
    random_examples: int | None = Field(
        None, ge=1, description="vary=finetune: size of the random arm (default: largest arm)"
    )
    target: str | None = Field(None, description="held-out text for bits per byte (default: pool)")
    target_split: Literal["heldout", "all"] = Field(
        "heldout", description="`all` when no arm trains on the target (a test set)"
    )
    heldout_fraction: float = Field(0.1, gt=0, lt=1)
    max_eval_docs: int = Field(500, ge=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    base: BaseSpec = Field(default_factory=BaseSpec)
    continued: TrainConfig = Field(default_factory=TrainConfig)
    task: TaskSpec

    @field_validator("name")
    @classmethod
    def _run_name(cls, value: str) -> str:
        return _checked("experiment", value)

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, arms: list[str]) -> list[str]:
        for arm in arms:
            _checked("arm", arm)
        if len(set(arms)) != len(arms):
            raise ValueError("arms must be distinct")
        return arms

    @model_validator(mode="after")
    def _budget(self) -> ExperimentSpec:
        if self.continued.max_steps is not None:
            raise ValueError("continued.max_steps: the step count follows from `tokens`; omit it")
        if self.vary == "continued":
            if self.pool is None:
                raise ValueError("pool: continued-pretraining arms need a pool")
            if self.tokens is None:
                raise ValueError("tokens: continued-pretraining arms need a token budget")
        else:
            if "none" in self.arms:
                raise ValueError("arms: `none` has no fine-tuning set; use vary: continued")
            if self.base.model is None and (self.base.corpus or self.pool) is None:
                raise ValueError("base.corpus: a preset base needs a corpus (or a pool)")
        return self

    def selection_arms(self) -> list[str]:
        """Arms that name a selection."""
        return [a for a in self.arms if a not in BUILTIN_ARMS]

    def base_corpus(self) -> str | None:
        """What a preset base is pretrained on: base.corpus, else the pool (corpus or selection)."""
        return self.base.corpus or self.pool

    def run_config(self, seed: int) -> TrainConfig:
        """The continued-pretraining config of one seed."""
        return self.continued.model_copy(update={"tokens": self.tokens, "seed": seed})


def _checked(kind: str, value: str) -> str:
    try:
        return validate_name(kind, value)
    except InputError as error:
        raise ValueError(str(error)) from None
