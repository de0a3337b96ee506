"""Causal-LM training entry points: pretrain a base from scratch, continue pretraining on a
fixed token budget, and bits-per-byte evaluation on held-out text.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from gristmill.errors import InputError
from gristmill.training.config import TrainConfig
from gristmill.training.data import PackedBatches, ShardDocuments, pack, tokenize
from gristmill.training.lm_scoring import score_documents
from gristmill.training.models import (
    build_model,
    get_preset,
    load_causal_lm,
    load_tokenizer,
    save_model,
    train_tokenizer,
)
from gristmill.training.trainer import DONE_FILE, is_done, train

TOKENIZER_DIR = "tokenizer"


def pretrain(
    preset: str,
    texts: list[str],
    out_dir: Path,
    config: TrainConfig,
    vocab_size: int | None = None,
    description: str = "pretrain",
) -> dict[str, Any]:
    """Train a tokenizer on `texts`, then a preset-shaped model from scratch, into out_dir."""
    shape = get_preset(preset)
    if config.seq_len > shape.max_positions:
        raise InputError(
            f"seq_len {config.seq_len} exceeds preset {preset!r}'s {shape.max_positions} positions"
        )
    if is_done(out_dir):
        return json.loads((out_dir / DONE_FILE).read_text(encoding="utf-8"))
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = out_dir / TOKENIZER_DIR
    if (tokenizer_dir / "tokenizer.json").exists():  # a resumed run keeps its tokenizer
        tokenizer = load_tokenizer(str(tokenizer_dir))
    else:
        tokenizer = train_tokenizer(texts, vocab_size or shape.vocab_size)
        tokenizer.save_pretrained(tokenizer_dir)
    model = build_model(shape, tokenizer, seed=config.seed)
    rows = pack(tokenize(tokenizer, texts), config.seq_len, tokenizer.eos_token_id)
    batches = PackedBatches(rows, config.micro_batch_size, config.seed)
    summary = train(
        model, batches, config, out_dir, lambda m, d: save_model(m, tokenizer, d), description
    )
    shutil.rmtree(tokenizer_dir, ignore_errors=True)  # saved with the model now
    return summary


def continue_pretraining(
    base: str,
    documents: ShardDocuments,
    out_dir: Path,
    config: TrainConfig,
    description: str = "continue pretraining",
    trust_remote_code: bool = False,
    chosen: np.ndarray | None = None,
) -> dict[str, Any]:
    """Continue training `base` for exactly config.tokens tokens (data repeats) on rows packed
    from token shards of its tokenizer (`chosen`: only these documents, in this order)."""
    if config.tokens is None:
        raise InputError("continued pretraining needs a token budget (tokens)")
    if is_done(out_dir):
        return json.loads((out_dir / DONE_FILE).read_text(encoding="utf-8"))
    tokenizer = load_tokenizer(base)
    if documents.eos_id != tokenizer.eos_token_id:
        raise InputError(
            f"continued pretraining: the token shards end documents with id {documents.eos_id}, "
            f"base {base}'s EOS is {tokenizer.eos_token_id} (shards of another tokenizer)"
        )
    model = load_causal_lm(base, trust_remote_code=trust_remote_code)
    rows = documents.rows(config.seq_len, chosen)
    batches = PackedBatches(rows, config.micro_batch_size, config.seed)
    return train(
        model, batches, config, out_dir, lambda m, d: save_model(m, tokenizer, d), description
    )


def bits_per_byte(
    model_path: str,
    texts: list[str],
    max_length: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    trust_remote_code: bool = False,
) -> dict[str, float]:
    """Bits per byte (and mean token loss) of a model over held-out texts taken together."""
    tokenizer = load_tokenizer(model_path)
    model = load_causal_lm(model_path, trust_remote_code=trust_remote_code)
    scores = score_documents(
        model,
        tokenizer,
        texts,
        max_length=max_length,
        device=device,
        precision=precision,
        description="evaluate bits per byte",
    )
    n_tokens = int(scores.n_tokens.sum())
    return {
        "bits_per_byte": scores.total_bits_per_byte(),
        "token_loss": float(scores.nll_sum.sum() / max(1, n_tokens)),
        "eval_bytes": int(scores.n_bytes.sum()),
    }
