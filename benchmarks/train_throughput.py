"""Training throughput: gristmill's loop vs transformers' Trainer, and per-document scoring.

Both systems train the same model (same preset, same initial weights), on the same packed
rows, with the same micro-batch, accumulation, precision, optimizer family and schedule, in
the same process, alternately (best and median of --repeat). Timing starts after --warmup-steps, so
compilation and the first allocations are excluded, and ends at the last optimizer step
(device synchronised); saving is not timed. Scoring is gristmill.training.lm_scoring over the
same text, forward only.

    .venv/bin/pip install -e '.[dev,bench]'
    .venv/bin/python benchmarks/train_throughput.py                          # CPU, tiny preset
    .venv/bin/python benchmarks/train_throughput.py --preset gpt2-124m --seq-len 1024 \
        --micro-batch 16 --grad-accum 2 --steps 30 --warmup-steps 5 --compile   # one GPU, bf16

MFU = FLOPs per token (6N + 12·layers·width·seq_len) x tokens/s / peak FLOP/s of the device
(a table of bf16 peaks for NVIDIA GPUs; GRISTMILL_PEAK_FLOPS overrides, e.g. for a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gristmill.devices import resolve_device
from gristmill.training.config import PRESETS, TrainConfig
from gristmill.training.data import PackedBatches, pack, tokenize
from gristmill.training.lm_scoring import score_documents
from gristmill.training.models import (
    build_model,
    flops_per_token,
    peak_flops,
    quiet_transformers,
    train_tokenizer,
)
from gristmill.training.trainer import train, use_bf16

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_texts(limit_bytes: int) -> list[str]:
    """TinyStories from ../shared/data (complete stories up to limit_bytes)."""
    path = DATA / "tinystories_2mib" / "tinystories_sample.txt"
    if not path.exists():
        raise SystemExit(f"needs {path} (../shared/data)")
    stories = path.read_text(encoding="utf-8").split("<|endoftext|>")[:-1]
    texts, used = [], 0
    for story in stories:
        if used >= limit_bytes:
            break
        texts.append(story.strip())
        used += len(story)
    return texts


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_gristmill(model, rows, args, device) -> float:
    """Tokens/s of gristmill.training.trainer.train after the warm-up steps."""
    config = TrainConfig(
        seq_len=args.seq_len,
        micro_batch_size=args.micro_batch,
        grad_accum=args.grad_accum,
        max_steps=args.warmup_steps + args.steps,
        warmup_steps=2,
        lr=3e-4,
        device=str(device),
        precision=args.precision,
        compile=args.compile,
        checkpoint_every=10**9,
        log_every=10**9,  # one device sync at the end, as in a long run
    )
    marks: dict[int, float] = {}

    def on_step(step: int) -> None:
        if step in (args.warmup_steps, args.warmup_steps + args.steps):
            _sync(device)
            marks[step] = time.perf_counter()

    with tempfile.TemporaryDirectory() as out:
        train(model, PackedBatches(rows, args.micro_batch, 0), config, Path(out),
              lambda m, d: None, on_step=on_step)  # fmt: skip
    seconds = marks[args.warmup_steps + args.steps] - marks[args.warmup_steps]
    return args.steps * args.micro_batch * args.grad_accum * args.seq_len / seconds


def run_trainer(model, rows, args, device) -> float:
    """Tokens/s of transformers.Trainer with the same model, data, batch and precision."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class Rows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return rows.shape[0]

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            return {"input_ids": rows[i], "labels": rows[i]}

    marks: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, arguments, state, control, **kwargs):
            if state.global_step in (args.warmup_steps, args.warmup_steps + args.steps):
                _sync(device)
                marks[state.global_step] = time.perf_counter()

    bf16 = use_bf16(device, args.precision)
    with tempfile.TemporaryDirectory() as out:
        arguments = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=args.micro_batch,
            gradient_accumulation_steps=args.grad_accum,
            max_steps=args.warmup_steps + args.steps,
            learning_rate=3e-4,
            weight_decay=0.1,
            adam_beta2=0.95,
            max_grad_norm=1.0,
            lr_scheduler_type="cosine",
            warmup_steps=2,
            bf16=bf16,
            optim="adamw_torch_fused" if device.type == "cuda" else "adamw_torch",
            torch_compile=args.compile,
            use_cpu=device.type == "cpu",
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=0,
        )
        trainer = Trainer(model=model, args=arguments, train_dataset=Rows(), callbacks=[Clock()])
        trainer.train()
    seconds = marks[args.warmup_steps + args.steps] - marks[args.warmup_steps]
    return args.steps * args.micro_batch * args.grad_accum * args.seq_len / seconds


def run_scoring(model, tokenizer, texts, args, device) -> float:
    """Tokens/s of per-document scoring (forward only, length-sorted batches)."""
    score_documents(model, tokenizer, texts[:32], max_length=args.seq_len, device=str(device),
                    precision=args.precision)  # fmt: skip
    _sync(device)
    start = time.perf_counter()
    scores = score_documents(model, tokenizer, texts, max_length=args.seq_len,
                             batch_tokens=args.score_batch_tokens, device=str(device),
                             precision=args.precision)  # fmt: skip
    _sync(device)
    return float(scores.n_tokens.sum()) / (time.perf_counter() - start)


def main() -> None:
    """Parse arguments, run every system --repeat times, print a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed first steps")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    parser.add_argument("--compile", action="store_true", help="torch.compile in both systems")
    parser.add_argument("--text-mb", type=float, default=2.0)
    parser.add_argument("--score-batch-tokens", type=int, default=16384)
    parser.add_argument("--out", type=Path, help="also write the JSON summary here")
    args = parser.parse_args()

    quiet_transformers()
    device = torch.device(resolve_device(args.device))
    preset = PRESETS[args.preset]
    texts = load_texts(int(args.text_mb * 2**20))
    tokenizer = train_tokenizer(texts, min(preset.vocab_size, 8192))
    rows = pack(tokenize(tokenizer, texts), args.seq_len, tokenizer.eos_token_id)
    # The preset's full vocabulary (50304 for gpt2-124m) even if the tokenizer learnt fewer.
    fresh = lambda: build_model(preset, tokenizer, seed=0, vocab_size=preset.vocab_size)  # noqa: E731
    probe = fresh()
    flops = flops_per_token(probe, args.seq_len)
    peak = peak_flops(device)
    results: dict[str, list[float]] = {"gristmill": [], "hf_trainer": [], "scoring": []}
    for repeat in range(args.repeat):
        # Alternate which system goes first: a busy machine's load drifts within a repeat.
        order = ["gristmill", "hf_trainer"] if repeat % 2 == 0 else ["hf_trainer", "gristmill"]
        for name in order:
            run = run_gristmill if name == "gristmill" else run_trainer
            results[name].append(run(fresh(), rows, args, device))
        results["scoring"].append(run_scoring(fresh(), tokenizer, texts, args, device))
    best = {name: max(values) for name, values in results.items()}
    median = {name: statistics.median(values) for name, values in results.items()}
    summary = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "preset": args.preset,
        "params": sum(p.numel() for p in probe.parameters()),
        "bf16": use_bf16(device, args.precision),
        "compile": args.compile,
        "seq_len": args.seq_len,
        "micro_batch": args.micro_batch,
        "grad_accum": args.grad_accum,
        "timed_steps": args.steps,
        "flops_per_token": flops,
        "peak_flops": peak,
        "tokens_per_s": best,
        "median_tokens_per_s": median,
        "all_runs": results,
        "mfu": {k: flops * v / peak for k, v in best.items() if peak and k != "scoring"},
        "gristmill_vs_trainer": best["gristmill"] / best["hf_trainer"],
        "gristmill_vs_trainer_median": median["gristmill"] / median["hf_trainer"],
        "scoring_vs_training_per_token": best["scoring"] / best["gristmill"],
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
