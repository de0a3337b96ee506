"""The word-cached document encoder gives the tokenizer's own ids, for every kind of text."""

from __future__ import annotations

import json
import random

import pytest

from gristmill.storage import token_encoder
from gristmill.storage.token_encoder import DocumentEncoder

CORPUS = [
    "The miller's wheel turned all day; we'd seen 1,024 sacks of grain.",
    "Ünïcödé café — naïve 😀 text\tand\ttabs\n\nnew  lines   here ",
    "It's 3:15pm. They've gone, I'll stay... <|endoftext|> isn't a word!",
]


@pytest.fixture(scope="module")
def backend():
    """A byte-level BPE as `training.models.train_tokenizer` makes (without transformers)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tokenizer.train_from_iterator(CORPUS * 20, trainer)
    return tokenizer


def _texts() -> list[str]:
    """Every pair of ASCII characters, each in a few contexts, random strings of the characters
    GPT-2's pattern treats apart, non-ASCII text and an added token's text inside a document."""
    chars = [chr(i) for i in range(128)]
    texts = [a + b for a in chars for b in chars]
    for c in chars:
        texts += [f"x{c}y", f" {c} ", c * 3, f"ab {c}'s", f"'{c}", f"1{c}2", f"\n{c}\n\n"]
    rng = random.Random(0)
    alphabet = "aZ09 \t\n\r\x0b\x0c'sdtlmrev.,!?-_\"()\x1c\x85é😀"
    texts += ["".join(rng.choices(alphabet, k=rng.randint(0, 30))) for _ in range(2000)]
    return texts + CORPUS + ["", "   ", "a<|endoftext|>b"]


def _reference(backend, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]


def test_cached_words_give_the_tokenizers_ids(backend) -> None:
    encoder = DocumentEncoder(backend)
    assert encoder.word_cache  # a byte-level BPE: the cached path is the one tested
    texts = _texts()
    assert encoder.encode(texts) == _reference(backend, texts)
    warm = texts[-3000:]
    assert encoder.encode(warm) == _reference(backend, warm)  # from the cache this time


def test_a_full_cache_starts_over_and_stays_right(backend, monkeypatch) -> None:
    monkeypatch.setattr(token_encoder, "WORD_CACHE_LIMIT", 50)
    encoder = DocumentEncoder(backend)
    texts = _texts()[-400:]
    for start in range(0, len(texts), 40):
        batch = texts[start : start + 40]
        assert encoder.encode(batch) == _reference(backend, batch)
    assert len(encoder._local.cache) <= 50 + len(set(" ".join(texts).split()))


def test_other_tokenizers_are_used_as_they_are(backend) -> None:
    from tokenizers import Tokenizer, normalizers

    config = json.loads(backend.to_str())
    assert token_encoder.word_cacheable(config)
    prefixed = {**config["pre_tokenizer"], "add_prefix_space": True}
    for key, value in (("normalizer", {"type": "Lowercase"}), ("pre_tokenizer", prefixed)):
        assert not token_encoder.word_cacheable({**config, key: value})
    lowered = Tokenizer.from_str(backend.to_str())
    lowered.normalizer = normalizers.Lowercase()
    encoder = DocumentEncoder(lowered)
    assert not encoder.word_cache
    assert encoder.encode(CORPUS) == _reference(lowered, CORPUS)
