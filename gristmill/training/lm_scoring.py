"""Per-document language-model scores: mean token loss and bits per byte, batched.

Each document is scored as EOS + its tokens, so every token of the document is predicted
(the first from EOS alone, as after a document boundary in training). A document longer than
the window is split into windows that overlap by one token, so each token is predicted once.
Windows are sorted by length before batching, which keeps padding small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gristmill import progress
from gristmill.devices import resolve_device
from gristmill.training.data import tokenize
from gristmill.training.trainer import use_bf16

LN2 = math.log(2.0)


@dataclass
class DocumentScores:
    """Per-document sums and means; index i is the i-th text given."""

    nll_sum: np.ndarray  # nats, summed over the document's tokens
    n_tokens: np.ndarray
    n_bytes: np.ndarray  # UTF-8 bytes of the text

    @property
    def mean_loss(self) -> np.ndarray:
        """Mean token loss in nats (NaN for an empty document)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.nll_sum / self.n_tokens

    @property
    def bits_per_byte(self) -> np.ndarray:
        """Bits per UTF-8 byte (NaN for an empty document)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.nll_sum / (LN2 * self.n_bytes)

    def total_bits_per_byte(self) -> float:
        """Bits per byte of all the documents together (a corpus-level figure)."""
        return float(self.nll_sum.sum() / (LN2 * max(1, int(self.n_bytes.sum()))))


def _windows(
    token_lists: list[list[int]], eos_id: int, max_len: int
) -> list[tuple[int, list[int]]]:
    """(document index, window of at most max_len + 1 tokens) for every document."""
    windows = []
    for doc, tokens in enumerate(token_lists):
        ids = [eos_id, *tokens]
        for start in range(0, max(1, len(ids) - 1), max_len):
            window = ids[start : start + max_len + 1]
            if len(window) > 1:
                windows.append((doc, window))
    return windows


@torch.inference_mode()
def score_documents(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    batch_tokens: int = 16384,
    max_length: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    description: str | None = None,
) -> DocumentScores:
    """Sum of token losses, token and byte counts per text, for one causal LM."""
    target = torch.device(resolve_device(device))
    bf16 = use_bf16(target, precision)
    model.to(target)
    model.eval()
    limit = max_length or int(getattr(model.config, "max_position_embeddings", 0) or 1024)
    limit = min(limit, int(getattr(model.config, "n_positions", limit) or limit))
    eos_id = tokenizer.eos_token_id
    token_lists = tokenize(tokenizer, texts)
    windows = _windows(token_lists, eos_id, limit)
    nll = np.zeros(len(texts), dtype=np.float64)
    counts = np.array([len(t) for t in token_lists], dtype=np.int64)
    n_bytes = np.fromiter((len(t.encode("utf-8")) for t in texts), np.int64, len(texts))
    order = sorted(range(len(windows)), key=lambda i: len(windows[i][1]), reverse=True)
    bar = progress.track(description or "score documents", len(windows))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    start = 0
    try:
        while start < len(order):
            width = len(windows[order[start]][1]) - 1  # longest first: the batch's width
            size = max(1, batch_tokens // max(1, width))
            chosen = order[start : start + size]
            inputs = torch.full((len(chosen), width), pad_id, dtype=torch.long)
            labels = torch.full((len(chosen), width), -100, dtype=torch.long)
            mask = torch.zeros((len(chosen), width), dtype=torch.long)
            for row, index in enumerate(chosen):
                window = torch.as_tensor(windows[index][1], dtype=torch.long)
                n = len(window) - 1
                inputs[row, :n] = window[:-1]
                labels[row, :n] = window[1:]
                mask[row, :n] = 1
            # Without padding, no mask lets SDPA take its causal fast path.
            attention = None if bool(mask.all()) else mask.to(target)
            inputs, labels = inputs.to(target), labels.to(target)
            with torch.autocast(target.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids=inputs, attention_mask=attention).logits
            # Cross-entropy over a contiguous (tokens, vocab) view: the (batch, vocab, time)
            # transpose it would otherwise need is several times slower.
            losses = (
                torch.nn.functional.cross_entropy(
                    logits.float().reshape(-1, logits.shape[-1]),
                    labels.reshape(-1),
                    ignore_index=-100,
                    reduction="none",
                )
                .view(labels.shape)
                .sum(dim=1)
            )
            for row, value in zip(chosen, losses.cpu().numpy().astype(np.float64), strict=True):
                nll[windows[row][0]] += value
            bar.advance(len(chosen))
            start += len(chosen)
    finally:
        bar.close()
    return DocumentScores(nll, counts, n_bytes)
