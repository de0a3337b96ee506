"""A model zoo for perplexity correlations, built offline: small LMs on random domain mixtures.

Each model is trained on a Dirichlet-random mixture of the pool's domains, with a size and a
token count drawn from small sets, and evaluated on a target benchmark: the held-out bits per
byte of one pool domain or of a target corpus, reported as the error 1 - 2^-bpb (the complement
of the geometric-mean probability per byte, in [0, 1) and monotone in the loss). All models
share one BPE tokenizer trained on the pool's training split. The result is a directory of HF
checkpoints plus `zoo.csv` (model,error,...), the same format as a hand-written zoo of public
models, and `zoo.json` with the mixtures, sizes, costs and the held-out split.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gristmill import progress
from gristmill.devices import Device, resolve_device
from gristmill.errors import InputError
from gristmill.storage import catalog
from gristmill.storage.files import write_json_atomic, write_text_atomic
from gristmill.storage.token_shards import TokenizeOptions, write_token_shards
from gristmill.storage.workspace import Workspace, validate_name
from gristmill.training.config import Preset, TrainConfig

ZOO_FILE = "zoo.csv"
ZOO_METADATA = "zoo.json"
ZOOS_DIR = "zoos"
SETTINGS_FILE = "settings.json"
TOKENIZER_DIR = "tokenizer"
TOKENS_DIR = "tokens"  # the training split's token shards (storage/token_shards.py)


def zoo_dir(workspace: Workspace, name: str) -> Path:
    """Where a zoo built under `name` lives: <workspace>/zoos/<name>."""
    return workspace.root / ZOOS_DIR / validate_name("zoo", name)


# GPT-2 shapes from about 20k to a few million parameters (plus the embedding, which grows
# with the vocabulary); varied so the zoo spans sizes as a public leaderboard does.
ZOO_SIZES: dict[str, Preset] = {
    "xs": Preset("gpt2", n_layer=1, n_head=2, n_embd=32, max_positions=256, vocab_size=512),
    "s": Preset("gpt2", n_layer=2, n_head=2, n_embd=48, max_positions=256, vocab_size=512),
    "m": Preset("gpt2", n_layer=2, n_head=4, n_embd=64, max_positions=256, vocab_size=512),
    "l": Preset("gpt2", n_layer=4, n_head=4, n_embd=128, max_positions=512, vocab_size=512),
    "xl": Preset("gpt2", n_layer=6, n_head=8, n_embd=256, max_positions=512, vocab_size=512),
}


class ZooConfig(BaseModel):
    """How many models, their sizes and token counts, the mixtures and the target benchmark."""

    model_config = ConfigDict(extra="forbid")

    models: int = Field(8, ge=3, description="number of models (at least 3)")
    sizes: list[str] = Field(default_factory=lambda: ["xs", "s", "m"], min_length=1)
    tokens: list[int] = Field(default_factory=lambda: [20_000, 40_000], min_length=1)
    alpha: float = Field(1.0, gt=0, description="Dirichlet concentration of the mixtures")
    target_domain: str | None = Field(None, description="benchmark: held-out bpb of this domain")
    target: str | None = Field(None, description="benchmark: bpb of this corpus's documents")
    heldout_fraction: float = Field(0.1, gt=0, lt=1, description="pool text no model trains on")
    max_eval_docs: int = Field(500, ge=1)
    vocab_size: int = Field(512, ge=260)
    seq_len: int = Field(64, ge=8)
    micro_batch_size: int = Field(16, ge=1)
    lr: float = Field(3e-3, gt=0)
    seed: int = 0
    device: Device = "auto"
    threads: int | None = Field(
        1, ge=1, description="torch CPU threads while building (None: torch's default); tiny "
        "models lose more to thread synchronisation than they gain, most of all on busy cores",
    )  # fmt: skip

    @field_validator("sizes")
    @classmethod
    def _known_sizes(cls, sizes: list[str]) -> list[str]:
        unknown = [s for s in sizes if s not in ZOO_SIZES]
        if unknown:
            raise ValueError(f"unknown size(s) {unknown} (sizes: {', '.join(ZOO_SIZES)})")
        return sizes

    @field_validator("tokens")
    @classmethod
    def _positive_tokens(cls, tokens: list[int]) -> list[int]:
        if any(t < 1 for t in tokens):
            raise ValueError("token counts must be positive")
        return tokens

    @model_validator(mode="after")
    def _one_target(self) -> ZooConfig:
        if (self.target_domain is None) == (self.target is None):
            raise ValueError("give exactly one benchmark: target_domain or target")
        return self


def zoo_config(values: dict[str, Any]) -> ZooConfig:
    """A validated ZooConfig; InputError naming each bad key."""
    try:
        return ZooConfig(**values)
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            key = ".".join(str(p) for p in problem["loc"]) or "(top level)"
            lines.append(f"zoo: {key}: {problem['msg']}")
        raise InputError("\n".join(lines)) from None


def benchmark_error(bits_per_byte: float) -> float:
    """1 - 2^-bpb: an error in [0, 1) that rises with the loss (for the zoo CSV)."""
    return float(1.0 - 2.0 ** (-bits_per_byte))


def _mixture_stream(
    lengths: np.ndarray,
    by_domain: list[np.ndarray],
    mixture: np.ndarray,
    tokens: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Indices of documents drawn per domain in a random order (repeating if short) up to each
    share, shuffled (`lengths`: each document's tokens with its EOS)."""
    chosen: list[int] = []
    for members, share in zip(by_domain, mixture, strict=True):
        quota = share * tokens
        if quota < 1 or len(members) == 0:
            continue
        order = rng.permutation(members)
        used, position = 0, 0
        while used < quota:
            doc = int(order[position % len(order)])
            chosen.append(doc)
            used += int(lengths[doc])
            position += 1
    picked = np.asarray(chosen, dtype=np.int64)
    return picked[rng.permutation(len(picked))]


def build_zoo(
    workspace: Workspace, corpus: str, out_dir: Path, config: ZooConfig
) -> dict[str, Any]:
    """Train and evaluate the zoo into out_dir; finished models are kept when run again."""
    # torch loads here, not at import: recipes validate ZooConfig without it.
    import torch

    from gristmill.training.data import (
        DataSource,
        PackedBatches,
        ShardDocuments,
        heldout_mask,
        read_documents,
    )
    from gristmill.training.lm_scoring import score_documents
    from gristmill.training.models import (
        build_model,
        load_causal_lm,
        load_tokenizer,
        save_model,
        train_tokenizer,
    )
    from gristmill.training.trainer import is_done, train

    started = time.perf_counter()
    columns = ("doc_id", "text", "domain")
    pool = read_documents(workspace, DataSource(corpus=corpus), columns=columns)
    domains = np.asarray(pool["domain"].to_pylist(), dtype=object)
    domains = np.where(domains == None, "", domains).astype(str)  # noqa: E711
    names = sorted(set(domains.tolist()))
    if len(names) < 2:
        raise InputError(
            f"zoo: corpus {corpus!r} has {len(names)} domain(s); mixtures need at least two "
            "(ingest with --domain-field)"
        )
    held = heldout_mask(pool["doc_id"].to_numpy(), config.heldout_fraction)
    texts = pool["text"].to_pylist()
    eval_texts = _benchmark_texts(workspace, config, texts, domains, held, names)
    train_index = np.flatnonzero(~held)
    train_texts = [texts[i] for i in train_index]
    with workspace.catalog(read_only=True) as con:
        version = catalog.corpus_version(con, corpus)
    # Where and on how many threads it runs changes no result: not part of the zoo's identity.
    identity = config.model_dump(mode="json", exclude={"device", "threads"})
    _claim(out_dir, {"corpus": corpus, "corpus_version": version, "config": identity})
    tokenizer_dir = out_dir / TOKENIZER_DIR
    if (tokenizer_dir / "tokenizer.json").exists():
        tokenizer = load_tokenizer(str(tokenizer_dir))
    else:
        tokenizer = train_tokenizer(train_texts, config.vocab_size)
        tokenizer.save_pretrained(tokenizer_dir)
    # The pool's training split as token shards (resumable), read back memory-mapped: the
    # same ids, in the same order, as tokenizing the texts here would give.
    shards_dir = out_dir / TOKENS_DIR
    train_ids = pool["doc_id"].to_numpy()[train_index]
    write_token_shards(
        workspace, corpus, train_ids, shards_dir, TokenizeOptions(str(tokenizer_dir))
    )
    documents = ShardDocuments(shards_dir)
    train_domains = domains[train_index]
    by_domain = [np.flatnonzero(train_domains == d) for d in names]
    device = resolve_device(config.device)
    rows, details = [], []
    bar = progress.track(f"zoo of {config.models} models on {corpus}", config.models)
    default_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        for k in range(config.models):
            rng = np.random.default_rng([config.seed, k])
            mixture = rng.dirichlet(np.full(len(names), config.alpha))
            size = config.sizes[int(rng.integers(len(config.sizes)))]
            budget = config.tokens[int(rng.integers(len(config.tokens)))]
            name = f"model-{k:03d}"
            model_dir = out_dir / name
            run = TrainConfig(
                seq_len=config.seq_len, micro_batch_size=config.micro_batch_size, lr=config.lr,
                warmup_steps=5, tokens=budget, seed=config.seed * 1000 + k, device=config.device,
                checkpoint_every=1_000_000, log_every=25,
            )  # fmt: skip
            model_started = time.perf_counter()
            resumed = is_done(model_dir)
            stream = _mixture_stream(documents.lengths, by_domain, mixture, budget, rng)
            model = build_model(ZOO_SIZES[size], tokenizer, seed=run.seed)
            batches = PackedBatches(documents.rows(config.seq_len, stream),
                                    config.micro_batch_size, run.seed)  # fmt: skip
            summary = train(
                model, batches, run,
                model_dir, lambda m, d: save_model(m, tokenizer, d), f"zoo {name} ({size})",
            )  # fmt: skip
            if resumed:  # train() returned the stored summary: evaluate the stored weights
                model = load_causal_lm(str(model_dir))
            train_seconds = time.perf_counter() - model_started
            scores = score_documents(model, tokenizer, eval_texts, device=config.device,
                                     description=f"evaluate {name}")  # fmt: skip
            bpb = scores.total_bits_per_byte()
            params = sum(p.numel() for p in model.parameters())
            rows.append({"model": name, "error": benchmark_error(bpb), "bits_per_byte": bpb,
                         "params": params, "tokens": summary["tokens"], "size": size})  # fmt: skip
            details.append({**rows[-1], "mixture": dict(zip(names, mixture.tolist(), strict=True)),
                            "train_seconds": train_seconds,
                            "eval_seconds": time.perf_counter() - model_started - train_seconds,
                            "tokens_per_s": summary.get("tokens_per_s")})  # fmt: skip
            bar.advance()
    finally:
        torch.set_num_threads(default_threads)
        bar.close()
    metadata = {
        "corpus": corpus, "corpus_version": version, "domains": names,
        "benchmark": {"target_domain": config.target_domain, "target": config.target,
                      "documents": len(eval_texts), "error": "1 - 2^-bits_per_byte"},
        "heldout_fraction": config.heldout_fraction, "config": config.model_dump(mode="json"),
        "device": str(device), "threads": config.threads or default_threads,
        "wall_seconds": time.perf_counter() - started, "models": details,
    }  # fmt: skip
    write_json_atomic(out_dir / ZOO_METADATA, metadata)
    lines = [",".join(rows[0])] + [",".join(_csv_value(v) for v in r.values()) for r in rows]
    write_text_atomic(out_dir / ZOO_FILE, "\n".join(lines) + "\n")
    return {"zoo": str(out_dir), **metadata}


def _claim(out_dir: Path, settings: dict[str, Any]) -> None:
    """Tie out_dir to these settings; a rerun with the same ones resumes, others are refused."""
    path = out_dir / SETTINGS_FILE
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored != settings:
            raise InputError(
                f"zoo {out_dir.name!r} at {out_dir} was built with other settings or data "
                f"({path}); pick another name or delete that directory"
            )
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, settings, sort_keys=True)


def _csv_value(value: Any) -> str:
    return f"{value:.8g}" if isinstance(value, float) else str(value)


def _benchmark_texts(
    workspace: Workspace,
    config: ZooConfig,
    texts: list[str],
    domains: np.ndarray,
    held: np.ndarray,
    names: list[str],
) -> list[str]:
    """The benchmark's documents: a pool domain's held-out split, or a target corpus."""
    from gristmill.training.data import DataSource, read_documents

    if config.target_domain is not None:
        if config.target_domain not in names:
            raise InputError(
                f"zoo: target_domain: {config.target_domain!r} is not a domain of the pool "
                f"(domains: {', '.join(names[:20])})"
            )
        index = np.flatnonzero(held & (domains == config.target_domain))
        chosen = [texts[i] for i in index[: config.max_eval_docs]]
        where = f"the held-out split of domain {config.target_domain!r}"
    else:
        assert config.target is not None
        target = read_documents(workspace, DataSource(corpus=config.target), columns=("text",))
        chosen = target["text"].to_pylist()[: config.max_eval_docs]
        where = f"corpus {config.target!r}"
    if not chosen:
        raise InputError(f"zoo: {where} has no documents to evaluate on (raise heldout_fraction)")
    return chosen
