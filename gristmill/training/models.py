"""Models and tokenizers: offline presets, a BPE tokenizer trained on workspace text, HF loading.

Every model is a Hugging Face causal LM, so any HF checkpoint (name or local path) is a valid
base and everything gristmill writes is a `save_pretrained` directory with safetensors weights.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from gristmill.errors import InputError
from gristmill.training.config import PRESETS, Preset

EOS_TOKEN = "<|endoftext|>"


def quiet_transformers() -> None:
    """Silence transformers' own tqdm bars and advice; gristmill reports progress itself."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def get_preset(name: str) -> Preset:
    """The preset called `name`; InputError listing the known ones."""
    if name not in PRESETS:
        raise InputError(f"unknown model preset {name!r} (presets: {', '.join(PRESETS)})")
    return PRESETS[name]


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE trained on `texts` (deterministic for the same texts in the same order)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is encodable
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=None,
        model_max_length=1 << 30,
    )


def build_model(
    preset: Preset, tokenizer: Any, seed: int = 0, vocab_size: int | None = None
) -> Any:
    """A freshly initialised causal LM of the preset's shape (SDPA attention, no dropout).

    The vocabulary is the tokenizer's (or `vocab_size` if larger), rounded up to 64.
    """
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    quiet_transformers()
    eos = tokenizer.eos_token_id
    # Round the embedding up to a multiple of 64: faster matmuls on GPUs, unused rows are harmless.
    vocab = -(-max(len(tokenizer), vocab_size or 1) // 64) * 64
    if preset.family == "gpt2":
        config: Any = GPT2Config(
            vocab_size=vocab,
            n_positions=preset.max_positions,
            n_embd=preset.n_embd,
            n_layer=preset.n_layer,
            n_head=preset.n_head,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=eos,
            eos_token_id=eos,
            pad_token_id=eos,
        )
    else:
        config = LlamaConfig(
            vocab_size=vocab,
            hidden_size=preset.n_embd,
            intermediate_size=preset.intermediate_size,
            num_hidden_layers=preset.n_layer,
            num_attention_heads=preset.n_head,
            num_key_value_heads=preset.n_head,
            max_position_embeddings=preset.max_positions,
            bos_token_id=eos,
            eos_token_id=eos,
            pad_token_id=eos,
            tie_word_embeddings=True,
        )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def load_tokenizer(name_or_path: str) -> Any:
    """A tokenizer by HF name or local path, with a pad token (the EOS token if it has none)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=offline())
    except (OSError, ValueError) as error:
        raise InputError(f"tokenizer {name_or_path!r} could not be loaded: {error}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name_or_path: str, trust_remote_code: bool = False) -> Any:
    """A causal LM by HF name or local path (safetensors, SDPA attention)."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    try:
        return AutoModelForCausalLM.from_pretrained(
            name_or_path,
            attn_implementation="sdpa",
            use_safetensors=True,
            trust_remote_code=trust_remote_code,
            local_files_only=offline(),
            dtype=torch.float32,
        )
    except (OSError, ValueError) as error:
        raise InputError(f"model {name_or_path!r} could not be loaded: {error}") from None


def offline() -> bool:
    """True when HF_HUB_OFFLINE asks for local files only."""
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def save_model(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """Write a self-contained HF directory: safetensors weights, config and tokenizer."""
    out_dir.mkdir(parents=True, exist_ok=True)
    unwrapped = getattr(model, "_orig_mod", model)  # torch.compile wraps the module
    unwrapped.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


# -- FLOPs and MFU -----------------------------------------------------------------------------
# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets; the longest matching
# name wins. Override with GRISTMILL_PEAK_FLOPS for any other device.
PEAK_BF16_FLOPS: dict[str, float] = {
    "A100": 312e12,
    "A10G": 125e12,
    "A10": 125e12,
    "L4": 121e12,
    "L40S": 362e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "H200": 989e12,
    "GH200": 989e12,
    "B200": 2250e12,
}


def peak_flops(device: torch.device) -> float | None:
    """Peak FLOP/s of `device` for MFU: GRISTMILL_PEAK_FLOPS, else the table (GPUs), else None."""
    override = os.environ.get("GRISTMILL_PEAK_FLOPS")
    if override:
        return float(override)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    matches = [key for key in PEAK_BF16_FLOPS if key in name]
    return PEAK_BF16_FLOPS[max(matches, key=len)] if matches else None


def flops_per_token(model: Any, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the weights plus attention (PaLM appendix B)."""
    config = model.config
    n_params = sum(p.numel() for p in model.parameters())
    # Position embeddings are lookups, not matmuls; tied input embeddings count once (as lm_head).
    for name, parameter in model.named_parameters():
        if name.endswith("wpe.weight"):
            n_params -= parameter.numel()
    n_layer = getattr(config, "num_hidden_layers", None) or config.n_layer
    hidden = getattr(config, "hidden_size", None) or config.n_embd
    return 6.0 * n_params + 12.0 * n_layer * hidden * seq_len
