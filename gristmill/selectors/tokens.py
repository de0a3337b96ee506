"""Token counts for token budgets: a local Hugging Face tokenizer, or word pieces by default."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from gristmill.errors import InputError
from gristmill.selectors.base import Scorer, SelectorContext
from gristmill.selectors.requirements import Requirement, ScoredCorpus, Setting

# The pieces a GPT-2-style byte-level BPE pre-tokenizer splits text into; each becomes at least
# one token, so this counts a lower bound of BPE tokens without needing any vocabulary.
_PIECES = re.compile(r"\w+|[^\w\s]+")


class TokenCounter(Scorer):
    """Scores each document with its number of tokens (stored as the `tokens` signal)."""

    name: ClassVar[str] = "tokens"

    def __init__(self, tokenizer: str | None = None) -> None:
        self.tokenizer = tokenizer
        self._encoder: Any = None

    def config_dict(self) -> dict[str, Any]:
        """The tokenizer determines the counts."""
        return {"tokenizer": self.tokenizer or "word-pieces"}

    def _load(self) -> Any:
        if self._encoder is None:
            from transformers import AutoTokenizer

            try:
                self._encoder = AutoTokenizer.from_pretrained(self.tokenizer, local_files_only=True)
            except (OSError, ValueError) as error:
                message = f"tokenizer {self.tokenizer!r} could not be loaded: {error}"
                raise InputError(message) from None
        return self._encoder

    def count(self, texts: list[str]) -> np.ndarray:
        """Number of tokens of each text."""
        if self.tokenizer is None:
            return np.fromiter((len(_PIECES.findall(t)) for t in texts), np.int64, len(texts))
        encoded = self._load()(texts, add_special_tokens=False)["input_ids"]
        return np.fromiter((len(ids) for ids in encoded), np.int64, len(texts))

    def score(self, documents: pa.Table) -> pa.Table:
        """doc_id and token count (as score) per document."""
        counts = self.count(documents["text"].to_pylist())
        return pa.table({"doc_id": documents["doc_id"], "score": pa.array(counts, pa.float64())})


def budget_requirements(context: SelectorContext) -> list[Requirement]:
    """The seed and budget a set selector's greedy stops at, and token counts for a token budget."""
    budget = context.budget
    needs: list[Requirement] = [
        Setting("seed", context.seed),
        Setting("budget", [budget.unit, budget.value] if budget else None),
    ]
    if budget is not None and budget.counts == "tokens":
        needs.append(ScoredCorpus("tokens", context.corpus, TokenCounter(context.tokenizer)))
    return needs
