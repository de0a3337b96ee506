"""What `learnability` and `cartography` share: a reference model trained on the candidate set.

Both are set selectors. Per shard they store the fields training needs (prompt and response, or
text and label), which is cheap; over the pool they fine-tune a reference model and store
per-example statistics (losses, per-epoch probabilities) as the `<name>_set` signal. Settings
that only rank those statistics (a region, a normalisation) are left out of every cache key, so
re-selecting with another fraction or region reads the stored signal and never retrains.

The base model is `model` (a HF name, local path or workspace model) or, without one, a `preset`
pretrained for `base_steps` steps on the candidate documents themselves, as the experiment's base
is (`gristmill.training.lm.pretrain`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from gristmill.devices import Device
from gristmill.errors import InputError
from gristmill.selectors.base import SelectorConfig, SelectorContext, SetSelector
from gristmill.selectors.requirements import ModelFiles, Requirement
from gristmill.training.config import PRESETS, PresetName, TrainConfig


class ReferenceConfig(SelectorConfig):
    """The base model and how the reference model is trained from it."""

    unkeyed_fields = frozenset({"device"})

    model: str | None = Field(
        None, description="base model: HF name, local path or workspace model; default: preset"
    )
    preset: PresetName = Field("tiny", description="without `model`: preset pretrained on the pool")
    base_steps: int = Field(200, ge=1, description="preset base: pretraining steps")
    epochs: int = Field(2, ge=1, description="reference fine-tuning epochs")
    lr: float = Field(1e-3, gt=0, description="fine-tuning learning rate")
    micro_batch_size: int = Field(16, ge=1)
    max_length: int = Field(128, ge=8, description="tokens per example (longer are cut)")
    train_seed: int = Field(0, description="seed of the base and reference training")
    trust_remote_code: bool = False
    device: Device = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"


class ReferenceSetSelector(SetSelector):
    """A set selector that trains a reference model on the candidate set (learnability,
    cartography)."""

    config: ReferenceConfig

    def requirements(self, context: SelectorContext) -> list[Requirement]:
        """The base model's files, when one is given (a retrained model rescores the set)."""
        if self.config.model is None:
            return []
        return [ModelFiles("model", self.config.model, stage="set")]

    def prepare(self, context: SelectorContext) -> None:
        """Fail early on a base model that cannot be found."""
        if self.config.model is not None:
            self.load_tokenizer(self.model_path(context, self.config.model), "model")

    def model_path(self, context: SelectorContext, name: str) -> str:
        """A workspace model name, local path or hub name, resolved."""
        from gristmill.storage.files import resolve_model_path

        return resolve_model_path(name, context.workspace.root / "models")

    def load_tokenizer(self, path: str, key: str) -> Any:
        """The model's tokenizer; InputError naming the parameter when it cannot be loaded."""
        from gristmill.training.models import load_tokenizer

        try:
            return load_tokenizer(path)
        except InputError as error:
            raise InputError(f"selector {self.name}: {key}: {error}") from None

    def train_config(self, steps: int | None = None) -> TrainConfig:
        """The training settings of the base (with `steps`) or the reference fine-tuning."""
        cfg = self.config
        return TrainConfig(
            seq_len=min(cfg.max_length, PRESETS[cfg.preset].max_positions),
            micro_batch_size=cfg.micro_batch_size,
            lr=cfg.lr,
            max_steps=steps,
            seed=cfg.train_seed,
            device=cfg.device,
            precision=cfg.precision,
            log_every=50,
        )

    def base_model(self, context: SelectorContext, texts: list[str], scratch: Path) -> str:
        """Path of the base model: the given one, or the preset pretrained on `texts`."""
        from gristmill.training.lm import pretrain

        if self.config.model is not None:
            return context.inputs.model("model").path
        out_dir = scratch / "base"
        pretrain(
            self.config.preset,
            texts,
            out_dir,
            self.train_config(self.config.base_steps),
            description=f"{self.name}: pretrain base ({self.config.preset})",
        )
        return str(out_dir)
