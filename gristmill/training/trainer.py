"""The training loop: bf16 autocast, fused AdamW, gradient accumulation, cosine schedule with
warm-up, optional torch.compile, tokens/s and MFU, periodic checkpoints and resume.

One loop serves pretraining, continued pretraining and fine-tuning: it takes a model and a
`Batches` source whose batch i is fixed by (seed, i), so a resumed run is the same run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gristmill import progress
from gristmill.devices import resolve_device
from gristmill.storage.files import write_json_atomic
from gristmill.training.config import TrainConfig
from gristmill.training.data import Batches
from gristmill.training.models import flops_per_token, peak_flops

log = logging.getLogger(__name__)
DONE_FILE = "training.json"
CHECKPOINT = "checkpoint"


def use_bf16(device: torch.device, precision: str) -> bool:
    """bf16 autocast on GPUs that support it ('auto'), or when asked."""
    if precision == "bf16":
        return True
    return precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()


def lr_at(step: int, total: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio * lr."""
    if config.warmup_steps and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, total - config.warmup_steps)
    progress_ratio = min(1.0, (step - config.warmup_steps) / span)
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * progress_ratio))


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> Any:
    """AdamW (fused on GPUs); no weight decay on biases, norms and other 1-D parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        fused=device.type == "cuda",
    )


def _set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _save_checkpoint(
    out_dir: Path, model: Any, optimizer: Any, step: int, tokens: int, history: list[dict]
) -> None:
    """Weights (safetensors) and optimizer state, swapped in whole so a kill never corrupts it."""
    final, staging = out_dir / CHECKPOINT, out_dir / f".{CHECKPOINT}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    getattr(model, "_orig_mod", model).save_pretrained(staging, safe_serialization=True)
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "step": step,
            "tokens": tokens,
            "history": history,
            "torch_rng": torch.get_rng_state(),
        },
        staging / "trainer_state.pt",
    )
    previous = out_dir / f".{CHECKPOINT}.old"
    shutil.rmtree(previous, ignore_errors=True)
    if final.exists():
        os.replace(final, previous)
    os.replace(staging, final)
    shutil.rmtree(previous, ignore_errors=True)


def _load_checkpoint(out_dir: Path, model: Any, optimizer: Any) -> tuple[int, int, list[dict]]:
    """Restore weights and optimizer state from the last checkpoint; (step, tokens, history)."""
    from safetensors.torch import load_file

    directory = out_dir / CHECKPOINT
    if not directory.exists() and (out_dir / f".{CHECKPOINT}.old").exists():
        directory = out_dir / f".{CHECKPOINT}.old"  # killed between the two renames
    if not (directory / "trainer_state.pt").exists():
        return 0, 0, []
    weights = load_file(str(directory / "model.safetensors"))
    module = getattr(model, "_orig_mod", model)
    loaded = module.load_state_dict(weights, strict=False)
    # save_pretrained leaves out tied copies (lm_head = embeddings); anything else is a mismatch.
    state = module.state_dict()
    restored = {state[k].data_ptr() for k in weights if k in state}
    untied = [k for k in loaded.missing_keys if state[k].data_ptr() not in restored]
    if loaded.unexpected_keys or untied:
        raise RuntimeError(
            f"checkpoint {directory} does not match the model (missing {untied}, "
            f"unexpected {loaded.unexpected_keys}); delete it to start over"
        )
    state = torch.load(directory / "trainer_state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), int(state["tokens"]), list(state["history"])


def _rate_text(entry: dict[str, Any]) -> str:
    mfu = f", MFU {entry['mfu']:.1%}" if entry.get("mfu") else ""
    return f"{entry['tokens_per_s']:.0f} tokens/s{mfu}"


def is_done(out_dir: Path) -> bool:
    """True when a run in `out_dir` finished (its model and summary are written)."""
    return (out_dir / DONE_FILE).exists()


def train(
    model: Any,
    batches: Batches,
    config: TrainConfig,
    out_dir: Path,
    save: Callable[[Any, Path], None],
    description: str = "train",
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train `model` on `batches`; checkpoint to out_dir, resume from it, save the result there.

    `save(model, out_dir)` writes the finished model (with its tokenizer). Returns the run's
    summary (steps, tokens, loss, tokens/s, MFU), also written to out_dir/training.json.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if is_done(out_dir):
        return json.loads((out_dir / DONE_FILE).read_text(encoding="utf-8"))
    device = torch.device(resolve_device(config.device))
    bf16 = use_bf16(device, config.precision)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    _set_seed(config.seed)
    model.to(device)
    model.train()
    optimizer = make_optimizer(model, config, device)
    step, tokens_seen, history = _load_checkpoint(out_dir, model, optimizer)
    batches.move_to(device)
    first = next(iter(batches.batch(0).values()))
    seq_len = first.shape[1]
    tokens_per_step = batches.micro_batch_size * config.grad_accum * seq_len
    total_steps = config.steps_for(tokens_per_step)
    runner = torch.compile(model) if config.compile else model
    flops = flops_per_token(model, seq_len)
    peak = peak_flops(device)
    bar = progress.track(description, total_steps)
    bar.advance(step)
    window_tokens, window_start = 0, time.perf_counter()
    train_tokens, train_seconds = 0, 0.0
    loss_value = float("nan")
    try:
        while step < total_steps:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, config)
            loss_sum = torch.zeros((), device=device)
            step_tokens = 0
            for micro in range(config.grad_accum):
                batch = batches.batch(step * config.grad_accum + micro)
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                mask = batch.get("attention_mask")
                step_tokens += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss = runner(**batch).loss / config.grad_accum
                loss.backward()
                loss_sum += loss.detach()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += step_tokens
            window_tokens += step_tokens
            bar.advance()
            if step % config.log_every == 0 or step == total_steps:
                loss_value = float(loss_sum)  # syncs the device once per log interval
                elapsed = time.perf_counter() - window_start
                rate = window_tokens / elapsed if elapsed > 0 else 0.0
                train_tokens += window_tokens
                train_seconds += elapsed
                history.append(
                    {
                        "step": step,
                        "loss": loss_value,
                        "lr": optimizer.param_groups[0]["lr"],
                        "tokens": tokens_seen,
                        "tokens_per_s": rate,
                        "mfu": flops * rate / peak if peak else None,
                    }
                )
                log.info(
                    "%s step %d/%d loss %.4f %s",
                    description,
                    step,
                    total_steps,
                    loss_value,
                    _rate_text(history[-1]),
                )
                window_tokens, window_start = 0, time.perf_counter()
            if on_step is not None:
                on_step(step)
            if step % config.checkpoint_every == 0 and step < total_steps:
                _save_checkpoint(out_dir, model, optimizer, step, tokens_seen, history)
                window_start = time.perf_counter()  # checkpoint time is not training time
    finally:
        bar.close()
    model.eval()
    save(getattr(model, "_orig_mod", model), out_dir)
    tokens_per_s = train_tokens / train_seconds if train_seconds > 0 else None
    summary = {
        "steps": step,
        "tokens": tokens_seen,
        "tokens_per_step": tokens_per_step,
        "final_loss": loss_value if history else None,
        "tokens_per_s": tokens_per_s,
        "flops_per_token": flops,
        "peak_flops": peak,
        "mfu": flops * tokens_per_s / peak if (peak and tokens_per_s) else None,
        "device": str(device),
        "bf16": bf16,
        "compile": config.compile,
        "config": config.model_dump(),
        "history": history,
    }
    write_json_atomic(out_dir / DONE_FILE, summary)
    if tokens_per_s:
        log.info(
            "%s: %d steps, %d tokens, %s",
            description,
            step,
            tokens_seen,
            _rate_text({"tokens_per_s": tokens_per_s, "mfu": summary["mfu"]}),
        )
    shutil.rmtree(out_dir / CHECKPOINT, ignore_errors=True)
    return summary
