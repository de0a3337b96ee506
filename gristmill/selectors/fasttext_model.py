"""fastText bigram classifiers: train on labelled texts, predict P(label), held-out metrics.

One code path for every selector that ranks documents with a fastText classifier (`classifier`,
the document step of `perplexity_correlation`). fastText reads one example per line, so texts are
newline-flattened (and lower-cased when asked, as DCLM does) before training and predicting.
Training runs on one thread with a seed, so the same inputs give the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

LABEL_PREFIX = "__label__"


@dataclass(frozen=True)
class FastTextSettings:
    """What shapes a trained model: vector size, epochs, learning rate, n-grams, text handling."""

    dim: int = 64
    epochs: int = 25
    lr: float = 0.1
    word_ngrams: int = 2
    min_count: int = 1
    lowercase: bool = False
    max_chars: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain data, for reports and keys."""
        return {
            "dim": self.dim, "epochs": self.epochs, "lr": self.lr,
            "word_ngrams": self.word_ngrams, "min_count": self.min_count,
            "lowercase": self.lowercase, "max_chars": self.max_chars,
        }  # fmt: skip


def one_line(text: str | None, lowercase: bool = False, max_chars: int | None = None) -> str:
    """The text as fastText reads it: whitespace folded to single spaces on one line."""
    text = (text or "")[:max_chars] if max_chars is not None else (text or "")
    folded = " ".join(text.split())
    return folded.lower() if lowercase else folded


def train(
    texts: list[str],
    labels: list[str],
    settings: FastTextSettings,
    seed: int,
    scratch: Path,
) -> Any:
    """A fastText supervised model trained on `texts` with `labels` (names without prefix).

    Examples are written in a seeded shuffled order (fastText reads in file order).
    """
    import fasttext

    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / "fasttext-train.txt"
    order = np.random.default_rng(seed).permutation(len(texts))
    with path.open("w", encoding="utf-8") as handle:
        for i in order:
            line = one_line(texts[i], settings.lowercase, settings.max_chars)
            handle.write(f"{LABEL_PREFIX}{labels[i]} {line}\n")
    try:
        return fasttext.train_supervised(
            input=str(path), wordNgrams=settings.word_ngrams, dim=settings.dim,
            epoch=settings.epochs, lr=settings.lr, minCount=settings.min_count, thread=1,
            seed=seed, verbose=0,
        )  # fmt: skip
    finally:
        path.unlink(missing_ok=True)


def load(path: str | Path) -> Any:
    """A fastText model from a local file (no download)."""
    import fasttext

    return fasttext.load_model(str(path))


def model_labels(model: Any) -> list[str]:
    """The model's labels without the `__label__` prefix."""
    return [str(label).removeprefix(LABEL_PREFIX) for label in model.get_labels()]


def probability(
    model: Any,
    texts: list[str],
    label: str,
    lowercase: bool = False,
    max_chars: int | None = None,
) -> np.ndarray:
    """P(label) of each text under the model (0 where the model does not rank it)."""
    wanted = LABEL_PREFIX + label
    lines = [one_line(t, lowercase, max_chars) for t in texts]
    names, values = model.predict(lines, k=-1)
    out = np.zeros(len(texts), np.float64)
    for row, (row_names, row_values) in enumerate(zip(names, values, strict=True)):
        for name, value in zip(row_names, row_values, strict=True):
            if name == wanted:
                out[row] = value
                break
    return np.clip(out, 0.0, 1.0)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve (ties count one half); None without both classes."""
    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(np.asarray(scores, np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    unique, inverse = np.unique(values, return_inverse=True)
    totals = np.bincount(inverse, weights=ranks, minlength=len(unique))
    counts = np.bincount(inverse, minlength=len(unique))
    return (totals / counts)[inverse]
