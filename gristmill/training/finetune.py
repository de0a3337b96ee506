"""Fine-tuning and evaluation: classification with a sequence-classification head, instruction
SFT with the loss on response tokens only, and the metrics of each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gristmill import progress
from gristmill.devices import resolve_device
from gristmill.errors import InputError
from gristmill.training.config import TrainConfig
from gristmill.training.data import Batches, pad_batch, tokenize
from gristmill.training.trainer import train, use_bf16


@dataclass
class ClassificationData:
    """Texts with integer labels, and the label names."""

    texts: list[str]
    labels: list[int]
    label_names: list[str]


@dataclass
class SFTData:
    """Prompts and the responses the model should learn to give."""

    prompts: list[str]
    responses: list[str]


class ClassificationBatches(Batches):
    """Padded (text, label) batches, truncated to max_length tokens."""

    def __init__(
        self,
        tokenizer: Any,
        data: ClassificationData,
        max_length: int,
        micro_batch_size: int,
        seed: int,
    ) -> None:
        super().__init__(len(data.texts), micro_batch_size, seed)
        self.ids = [
            ids[:max_length] or [tokenizer.eos_token_id] for ids in tokenize(tokenizer, data.texts)
        ]
        self.labels = data.labels
        self.pad_id = tokenizer.pad_token_id

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask and labels (one per sequence)."""
        chosen = self.indices(index)
        out = pad_batch([self.ids[i] for i in chosen], self.pad_id)
        out["labels"] = torch.tensor([self.labels[i] for i in chosen], dtype=torch.long)
        return out


def sft_example(
    tokenizer: Any, prompt: str, response: str, max_length: int
) -> tuple[list[int], list[int]]:
    """Token ids of prompt + response + EOS, and labels that are -100 on the prompt."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    response_ids = [*response_ids, tokenizer.eos_token_id]
    ids = (prompt_ids + response_ids)[:max_length]
    labels = ([-100] * len(prompt_ids) + response_ids)[:max_length]
    return ids, labels


class SFTBatches(Batches):
    """Padded prompt+response batches; only response tokens carry a label."""

    def __init__(
        self, tokenizer: Any, data: SFTData, max_length: int, micro_batch_size: int, seed: int
    ) -> None:
        examples = [
            sft_example(tokenizer, p, r, max_length)
            for p, r in zip(data.prompts, data.responses, strict=True)
        ]
        # A prompt that fills the whole window leaves nothing to learn from.
        self.examples = [e for e in examples if any(label != -100 for label in e[1])]
        super().__init__(len(self.examples), micro_batch_size, seed)
        self.pad_id = tokenizer.pad_token_id

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask and labels (-100 on prompt and padding)."""
        chosen = [self.examples[i] for i in self.indices(index)]
        return pad_batch([e[0] for e in chosen], self.pad_id, [e[1] for e in chosen])


def finetune_classification(
    base: str,
    tokenizer: Any,
    data: ClassificationData,
    config: TrainConfig,
    out_dir: Path,
    max_length: int = 128,
    description: str = "fine-tune (classification)",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Train a sequence-classification head (and the body) from a causal-LM checkpoint."""
    model = _classifier(base, tokenizer, data, config.seed, trust_remote_code)
    batches = ClassificationBatches(
        tokenizer, data, max_length, config.micro_batch_size, config.seed
    )
    return train(model, batches, config, out_dir, _saver(tokenizer), description)


def _classifier(
    base: str, tokenizer: Any, data: ClassificationData, seed: int, trust_remote_code: bool
) -> Any:
    """A sequence-classification model on a causal-LM checkpoint, with a fresh seeded head."""
    from transformers import AutoModelForSequenceClassification

    from gristmill.training.models import offline, quiet_transformers

    quiet_transformers()
    torch.manual_seed(seed)  # the new head's initial weights follow the run's seed
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            base,
            num_labels=len(data.label_names),
            pad_token_id=tokenizer.pad_token_id,
            id2label=dict(enumerate(data.label_names)),
            label2id={name: i for i, name in enumerate(data.label_names)},
            attn_implementation="sdpa",
            use_safetensors=True,
            local_files_only=offline(),
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError) as error:
        raise InputError(f"model {base!r} could not be loaded: {error}") from None


def classification_dynamics(
    base: str,
    tokenizer: Any,
    data: ClassificationData,
    config: TrainConfig,
    out_dir: Path,
    epochs: int,
    max_length: int = 128,
    description: str = "training dynamics",
    trust_remote_code: bool = False,
) -> np.ndarray:
    """Fine-tune a classifier for `epochs` epochs; class probabilities of every training example
    after each epoch, shape (epochs, examples, classes).

    Each epoch's probabilities are saved in out_dir as it ends (with a checkpoint), so an
    interrupted run resumes and a finished one is read back without training.
    """
    batches = ClassificationBatches(
        tokenizer, data, max_length, config.micro_batch_size, config.seed
    )
    per_step = config.micro_batch_size * config.grad_accum
    steps_per_epoch = -(-len(data.texts) // per_step)
    config = config.model_copy(
        update={"max_steps": epochs * steps_per_epoch, "checkpoint_every": steps_per_epoch}
    )
    files = [out_dir / f"epoch-{e + 1}-probabilities.npy" for e in range(epochs)]
    out_dir.mkdir(parents=True, exist_ok=True)
    model = _classifier(base, tokenizer, data, config.seed, trust_remote_code)

    def record(step: int) -> None:
        if step % steps_per_epoch:
            return
        probabilities = class_probabilities(
            model, tokenizer, data.texts, max_length, device=config.device,
            precision=config.precision,
        )  # fmt: skip
        model.train()
        target = files[step // steps_per_epoch - 1]
        staging = target.with_name(f".{target.name}")
        with staging.open("wb") as handle:
            np.save(handle, probabilities)
        staging.replace(target)

    train(model, batches, config, out_dir, _saver(tokenizer), description, on_step=record)
    return np.stack([np.load(f) for f in files])


def finetune_sft(
    base: str,
    tokenizer: Any,
    data: SFTData,
    config: TrainConfig,
    out_dir: Path,
    max_length: int = 256,
    description: str = "fine-tune (SFT)",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Instruction-tune a causal LM with the loss on response tokens only."""
    from gristmill.training.models import load_causal_lm

    model = load_causal_lm(base, trust_remote_code=trust_remote_code)
    batches = SFTBatches(tokenizer, data, max_length, config.micro_batch_size, config.seed)
    return train(model, batches, config, out_dir, _saver(tokenizer), description)


def _saver(tokenizer: Any) -> Any:
    from gristmill.training.models import save_model

    return lambda model, out_dir: save_model(model, tokenizer, out_dir)


# -- evaluation --------------------------------------------------------------------------------
def macro_f1(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in labels or predictions."""
    scores = []
    for c in range(n_classes):
        tp = int(((predictions == c) & (labels == c)).sum())
        fp = int(((predictions == c) & (labels != c)).sum())
        fn = int(((predictions != c) & (labels == c)).sum())
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


@torch.inference_mode()
def class_probabilities(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    max_length: int = 128,
    batch_size: int = 64,
    device: str = "auto",
    precision: str = "auto",
) -> np.ndarray:
    """Softmax class probabilities of a sequence classifier, shape (texts, classes)."""
    target = torch.device(resolve_device(device))
    bf16 = use_bf16(target, precision)
    model.to(target)
    model.eval()
    ids = [i[:max_length] or [tokenizer.eos_token_id] for i in tokenize(tokenizer, texts)]
    out = np.empty((len(ids), model.config.num_labels), dtype=np.float32)
    bar = progress.track("classify", len(ids))
    for start in range(0, len(ids), batch_size):
        batch = pad_batch(ids[start : start + batch_size], tokenizer.pad_token_id)
        batch = {k: v.to(target) for k, v in batch.items()}
        with torch.autocast(target.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(**batch).logits
        out[start : start + len(logits)] = torch.softmax(logits.float(), -1).cpu().numpy()
        bar.advance(len(logits))
    bar.close()
    return out


def evaluate_classification(
    model: Any,
    tokenizer: Any,
    data: ClassificationData,
    max_length: int = 128,
    batch_size: int = 64,
    device: str = "auto",
    precision: str = "auto",
) -> dict[str, float]:
    """Accuracy and macro-F1 of a sequence classifier."""
    if not data.texts:
        raise InputError("no classification examples to evaluate")
    probabilities = class_probabilities(
        model, tokenizer, data.texts, max_length, batch_size, device, precision
    )
    predictions = probabilities.argmax(-1)
    labels = np.asarray(data.labels)
    return {
        "accuracy": float((predictions == labels).mean()),
        "macro_f1": macro_f1(labels, predictions, len(data.label_names)),
    }


@torch.inference_mode()
def response_losses(
    model: Any,
    tokenizer: Any,
    data: SFTData,
    max_length: int = 256,
    batch_size: int = 32,
    device: str = "auto",
    precision: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Per example: summed response-token loss (nats) and the number of response tokens."""
    target = torch.device(resolve_device(device))
    bf16 = use_bf16(target, precision)
    model.to(target)
    model.eval()
    examples = [
        sft_example(tokenizer, p, r, max_length)
        for p, r in zip(data.prompts, data.responses, strict=True)
    ]
    nll = np.zeros(len(examples), dtype=np.float64)
    counts = np.zeros(len(examples), dtype=np.int64)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))  # less padding
    bar = progress.track("response loss", len(examples))
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        chunk = [examples[i] for i in chosen]
        batch = pad_batch([e[0] for e in chunk], tokenizer.pad_token_id, [e[1] for e in chunk])
        batch = {k: v.to(target) for k, v in batch.items()}
        with torch.autocast(target.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
        shifted = batch["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]),
            shifted.reshape(-1),
            ignore_index=-100,
            reduction="none",
        ).view(shifted.shape)
        nll[chosen] = losses.sum(dim=1).cpu().numpy()
        counts[chosen] = (shifted != -100).sum(dim=1).cpu().numpy()
        bar.advance(len(chunk))
    bar.close()
    return nll, counts


def evaluate_sft(
    model: Any,
    tokenizer: Any,
    data: SFTData,
    max_length: int = 256,
    batch_size: int = 32,
    device: str = "auto",
    precision: str = "auto",
) -> dict[str, float]:
    """Mean loss per response token (nats) over held-out prompt/response pairs, and its ppl."""
    nll, counts = response_losses(model, tokenizer, data, max_length, batch_size, device, precision)
    if counts.sum() == 0:
        raise InputError("no response tokens to evaluate")
    loss = float(nll.sum() / counts.sum())
    return {"response_loss": loss, "response_ppl": math.exp(min(loss, 50.0))}
