"""The `lm_loss` selector: per-document mean token loss and bits per byte under a causal LM.

The scoring engine is gristmill.training.lm_scoring; this wraps it as a stored signal, so
later selectors (perplexity correlation, learnability) and `gristmill sql` reuse the losses.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from gristmill.devices import Device
from gristmill.selectors.base import Selector, SelectorConfig, SelectorContext
from gristmill.selectors.requirements import ModelFiles, Requirement

# One model per process, loaded on first use, shared by the scoring threads.
_load_lock = threading.Lock()
_loaded: dict[tuple[str, str | None], tuple[Any, Any]] = {}


class LMLossConfig(SelectorConfig):
    """Which model scores, and how."""

    # Device and batching change the numbers only within rounding: not part of the key.
    unkeyed_fields = frozenset({"device", "batch_tokens"})

    model: str = Field(description="HF name, local path or workspace model (models/<name>)")
    batch_tokens: int = Field(16384, ge=64, description="padded tokens per forward batch")
    max_length: int | None = Field(None, ge=8, description="window length (default: the model's)")
    device: Device = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"


class LMLossSelector(Selector):
    """Mean token loss and bits per byte of each document under a causal LM; score = -loss."""

    name: ClassVar[str] = "lm_loss"
    Config = LMLossConfig
    default_mode = "topk"

    def __init__(self, config: LMLossConfig) -> None:
        super().__init__(config)
        self.model_path: str = config.model
        self._fingerprint: str | None = None

    def requirements(self, context: SelectorContext) -> list[Requirement]:
        """The model's files: their content hash keys the scores (a retrained model rescores)."""
        return [ModelFiles("model", self.config.model)]

    def prepare(self, context: SelectorContext) -> None:
        """Take the resolved model directory and its fingerprint."""
        model = context.inputs.model("model")
        self.model_path, self._fingerprint = model.path, model.fingerprint

    def _model(self) -> tuple[Any, Any]:
        from gristmill.training.models import load_causal_lm, load_tokenizer

        # The fingerprint is in the key: a model retrained in place is loaded again.
        key = (self.model_path, self._fingerprint)
        with _load_lock:
            if key not in _loaded:
                _loaded[key] = (load_causal_lm(self.model_path), load_tokenizer(self.model_path))
            return _loaded[key]

    def release(self) -> None:
        """Drop this model from the process's cache (a zoo scores many models one after another)."""
        with _load_lock:
            for key in [k for k in _loaded if k[0] == self.model_path]:
                del _loaded[key]

    def score(self, documents: pa.Table) -> pa.Table:
        """doc_id, score (= -mean loss), loss (nats/token), bits_per_byte and n_tokens."""
        from gristmill.training.lm_scoring import score_documents

        model, tokenizer = self._model()
        with _load_lock:  # one forward pass at a time: the model is shared between threads
            scores = score_documents(
                model,
                tokenizer,
                documents["text"].to_pylist(),
                batch_tokens=self.config.batch_tokens,
                max_length=self.config.max_length,
                device=self.config.device,
                precision=self.config.precision,
                description="lm_loss shard",
            )
        loss = scores.mean_loss
        return pa.table(
            {
                "doc_id": documents["doc_id"],
                "score": pa.array(np.where(np.isnan(loss), -np.inf, -loss), pa.float64()),
                "loss": pa.array(loss, pa.float64()),
                "bits_per_byte": pa.array(scores.bits_per_byte, pa.float64()),
                "n_tokens": pa.array(scores.n_tokens, pa.int64()),
            }
        )
