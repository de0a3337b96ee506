"""Documents to token ids, as the tokenizer gives them, with less CPU per token.

Nearly all of a token export's CPU is the `tokenizers` encoder. For byte-level BPE tokenizers
(GPT-2's kind, and what `training.models.train_tokenizer` makes), a document's ids are the ids
of its pre-tokenized words, one after another, and a corpus repeats its words: so the words of
an ASCII document are split here by the tokenizer's own pattern (written for ASCII, where it
means the same), each distinct word is encoded once by the tokenizer itself, and the document is
the concatenation of its words' cached ids. Any other document (non-ASCII text, an added
token's text in it, a control character) and any other kind of tokenizer go to the tokenizer
whole. tests/test_token_encoder.py checks the two ways give the same ids.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from typing import Any

# GPT-2's pre-tokenizer pattern (tokenizers' ByteLevel with use_regex) for ASCII text, where
# \p{L} is [A-Za-z], \p{N} is [0-9] and \s the six ASCII white-space characters.
ASCII_WORDS = re.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""", re.ASCII
)
# Control characters other than white space go to the tokenizer: no case worth a special rule.
CONTROL = r"[\x00-\x08\x0e-\x1f\x7f]"
WORD_CACHE_LIMIT = 200_000  # distinct words per thread (tens of MB), then the cache starts over


def word_cacheable(config: dict[str, Any]) -> bool:
    """True for a tokenizer (its `tokenizer.json` as data) that encodes each pre-tokenized
    word on its own, with GPT-2's pattern: no normalizer, ByteLevel, BPE without dropout."""
    pre = config.get("pre_tokenizer") or {}
    model = config.get("model") or {}
    return (
        config.get("normalizer") is None
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True)
        and not pre.get("add_prefix_space", False)
        and model.get("type") == "BPE"
        and model.get("dropout") is None
    )


class DocumentEncoder:
    """A tokenizer's ids of whole documents, without special tokens (none added)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend  # tokenizers.Tokenizer
        config = json.loads(backend.to_str())
        self.word_cache = word_cacheable(config)
        added = [re.escape(token["content"]) for token in config.get("added_tokens", [])]
        self._whole = re.compile("|".join([*added, CONTROL]))
        self._local = threading.local()  # a cache per thread: no locks, no shared mutation

    def _ids(self, texts: list[str]) -> list[list[int]]:
        encoded = self.backend.encode_batch_fast(texts, add_special_tokens=False)
        return [encoding.ids for encoding in encoded]

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids (fresh lists, the caller may change them)."""
        if not self.word_cache:
            return self._ids(texts)
        cache: dict[str, list[int]] = self._local.__dict__.setdefault("cache", {})
        split, whole = ASCII_WORDS.findall, self._whole.search
        words = [split(t) if t.isascii() and not whole(t) else None for t in texts]
        split_words = [w for w in words if w is not None]
        new = set().union(*split_words) - cache.keys()
        if len(cache) + len(new) > WORD_CACHE_LIMIT:
            cache.clear()
            new = set().union(*split_words)
        if new:
            ordered = list(new)
            cache.update(zip(ordered, self._ids(ordered), strict=True))
        get = cache.__getitem__
        out = [None if w is None else list(itertools.chain.from_iterable(map(get, w)))
               for w in words]  # fmt: skip
        others = [i for i, w in enumerate(words) if w is None]
        if others:
            for index, ids in zip(others, self._ids([texts[i] for i in others]), strict=True):
                out[index] = ids
        return out  # type: ignore[return-value]
