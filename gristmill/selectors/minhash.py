"""Text fingerprints for deduplication: normalisation, word hashes, MinHash signatures, bands.

The vectorised path (numba kernels over a batch's UTF-8 buffer) computes exactly what
datasketch's `MinHash(num_perm, seed, hashfunc=shingle_hash32, scheme="affine32")` computes for
the same shingles; `word_shingles` and `shingle_hash32` are the per-document reference that
the tests feed to datasketch.

Rules:
- normalised text: lower case, punctuation and symbols removed, runs of whitespace and control
  characters folded to one space, trimmed (nulls read as empty);
- shingles: word k-grams of the normalised text; a text with fewer than k words is one shingle
  (the whole normalised text); an empty normalised text has no shingles, so its signature is
  all 2^32 - 1 (datasketch's empty MinHash) and every empty document has the same signature;
- shingle hash: MurmurHash3's x86_32 block step over the FNV-1a 32-bit hashes of the shingle's
  words, then its finaliser (datasketch's affine32 scheme pre-mixes it once more with fmix32).
"""

from __future__ import annotations

import functools

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasketch import MinHash
from datasketch.lsh import _optimal_param

MAX_HASH32 = np.uint32(0xFFFFFFFF)
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
_SPACE = 0x20


# Unicode space separators beyond ASCII whitespace (rare, so this regex pass is cheap).
_UNICODE_SPACES = r"[\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]"


def normalize(texts: pa.Array | pa.ChunkedArray) -> pa.LargeStringArray:
    """Lower-cased texts without punctuation or symbols, whitespace folded to single spaces."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks else pa.array([], pa.string())
    lowered = pc.utf8_lower(texts.cast(pa.large_string()))
    stripped = pc.replace_substring_regex(lowered, r"[\pP\pS]+", "")
    spaced = pc.replace_substring_regex(stripped, _UNICODE_SPACES, " ")
    data, offsets = _buffers(spaced)
    folded, folded_offsets = _fold_whitespace(data, offsets)
    return pa.LargeStringArray.from_buffers(
        len(spaced), pa.py_buffer(folded_offsets), pa.py_buffer(folded)
    )


@numba.njit(cache=True, nogil=True)
def _fold_whitespace(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs of ASCII whitespace and control bytes become one space; ends are trimmed."""
    n = len(offsets) - 1
    out = np.empty(len(data), np.uint8)
    out_offsets = np.zeros(n + 1, np.int64)
    k = 0
    for i in range(n):
        pending_space = False
        start = k
        for j in range(offsets[i], offsets[i + 1]):
            byte = data[j]
            if byte <= _SPACE or byte == 0x7F:
                pending_space = k > start
            else:
                if pending_space:
                    out[k] = _SPACE
                    k += 1
                    pending_space = False
                out[k] = byte
                k += 1
        out_offsets[i + 1] = k
    return out[:k], out_offsets


def _buffers(normalized: pa.LargeStringArray) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes and int64 offsets of a large-string array (nulls read as empty)."""
    normalized = pc.fill_null(normalized, "")
    _, offsets, data = normalized.buffers()
    n = len(normalized)
    offs = np.frombuffer(offsets, np.int64, n + 1, normalized.offset * 8)
    raw = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    return raw, offs


@numba.njit(cache=True, nogil=True)
def _fmix32(h: np.uint32) -> np.uint32:
    h ^= h >> np.uint32(16)
    h = np.uint32(h * np.uint32(0x85EBCA6B))
    h ^= h >> np.uint32(13)
    h = np.uint32(h * np.uint32(0xC2B2AE35))
    h ^= h >> np.uint32(16)
    return h


@numba.njit(cache=True, nogil=True)
def _word_hashes(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FNV-1a 32 of every space-separated word; per-document offsets into the flat hashes."""
    n = len(offsets) - 1
    counts = np.zeros(n, np.int64)
    for i in range(n):
        in_word = False
        for j in range(offsets[i], offsets[i + 1]):
            if data[j] == _SPACE:
                in_word = False
            elif not in_word:
                in_word = True
                counts[i] += 1
    word_offsets = np.zeros(n + 1, np.int64)
    for i in range(n):
        word_offsets[i + 1] = word_offsets[i] + counts[i]
    hashes = np.empty(word_offsets[n], np.uint32)
    k = 0
    for i in range(n):
        h = np.uint32(_FNV_OFFSET)
        in_word = False
        for j in range(offsets[i], offsets[i + 1]):
            byte = data[j]
            if byte == _SPACE:
                if in_word:
                    hashes[k] = h
                    k += 1
                    in_word = False
                    h = np.uint32(_FNV_OFFSET)
            else:
                in_word = True
                h = np.uint32((h ^ np.uint32(byte)) * np.uint32(_FNV_PRIME))
        if in_word:
            hashes[k] = h
            k += 1
    return hashes, word_offsets


@numba.njit(cache=True, nogil=True)
def _combine32(words: np.ndarray, start: int, stop: int) -> np.uint32:
    """MurmurHash3 x86_32 over words[start:stop] (seed 0), with its length and finaliser."""
    h = np.uint32(0)
    for i in range(start, stop):
        k = np.uint32(words[i] * np.uint32(0xCC9E2D51))
        k = np.uint32((k << np.uint32(15)) | (k >> np.uint32(17)))
        k = np.uint32(k * np.uint32(0x1B873593))
        h ^= k
        h = np.uint32((h << np.uint32(13)) | (h >> np.uint32(19)))
        h = np.uint32(h * np.uint32(5) + np.uint32(0xE6546B64))
    h ^= np.uint32(4 * (stop - start))
    return _fmix32(h)


@numba.njit(cache=True, nogil=True)
def _signatures(
    words: np.ndarray, word_offsets: np.ndarray, a: np.ndarray, b: np.ndarray, k: int
) -> np.ndarray:
    n = len(word_offsets) - 1
    num_perm = len(a)
    out = np.full((n, num_perm), MAX_HASH32, np.uint32)
    for i in range(n):
        start, stop = word_offsets[i], word_offsets[i + 1]
        count = stop - start
        if count == 0:
            continue
        shingles = max(count - k + 1, 1)
        width = min(k, count)
        row = out[i]
        for s in range(shingles):
            hv = _fmix32(_combine32(words, start + s, start + s + width))
            for p in range(num_perm):
                value = np.uint32(a[p] * hv + b[p])
                if value < row[p]:
                    row[p] = value
    return out


@numba.njit(cache=True, nogil=True)
def _mix64(z: np.uint64) -> np.uint64:
    z = np.uint64(z + np.uint64(0x9E3779B97F4A7C15))
    z = np.uint64((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9))
    z = np.uint64((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB))
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def _band_hashes(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    n = signatures.shape[0]
    out = np.empty((n, bands), np.uint64)
    for i in range(n):
        for band in range(bands):
            h = _mix64(np.uint64(band))
            for r in range(band * rows, (band + 1) * rows):
                h = _mix64(h ^ np.uint64(signatures[i, r]))
            out[i, band] = h
    return out


@numba.njit(cache=True, nogil=True)
def _ngram_hashes(
    words: np.ndarray, word_offsets: np.ndarray, n: int, short_lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every word n-gram (and of every m-gram for m in short_lengths)."""
    docs = len(word_offsets) - 1
    total = 0
    for i in range(docs):
        count = word_offsets[i + 1] - word_offsets[i]
        total += max(count - n + 1, 0)
        for m in short_lengths:
            total += max(count - m + 1, 0)
    hashes = np.empty(total, np.uint64)
    owners = np.empty(total, np.int64)
    k = 0
    for i in range(docs):
        start, stop = word_offsets[i], word_offsets[i + 1]
        for length in np.concatenate((np.array([n], np.int64), short_lengths)):
            for s in range(start, stop - length + 1):
                h = _mix64(np.uint64(length))
                for w in range(s, s + length):
                    h = _mix64(h ^ np.uint64(words[w]))
                hashes[k] = h
                owners[k] = i
                k += 1
    return hashes, owners


def word_hashes(normalized: pa.LargeStringArray) -> tuple[np.ndarray, np.ndarray]:
    """Flat uint32 word hashes of normalised texts and the int64 offsets of each document's."""
    data, offsets = _buffers(normalized)
    return _word_hashes(data, offsets)


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's own affine32 permutation parameters (a, b) for (num_perm, seed)."""
    a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    return np.ascontiguousarray(a, np.uint32), np.ascontiguousarray(b, np.uint32)


def signatures(
    normalized: pa.LargeStringArray, num_perm: int = 128, seed: int = 1, shingle_size: int = 5
) -> np.ndarray:
    """MinHash signatures (n, num_perm) uint32, equal to datasketch's affine32 hashvalues."""
    words, word_offsets = word_hashes(normalized)
    a, b = permutations(num_perm, seed)
    return _signatures(words, word_offsets, a, b, shingle_size)


def band_hashes(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit hash per (document, band) of `rows` consecutive signature values."""
    if bands * rows > signatures.shape[1]:
        raise ValueError(f"{bands} bands x {rows} rows exceed {signatures.shape[1]} permutations")
    return _band_hashes(np.ascontiguousarray(signatures), bands, rows)


def ngram_hashes(
    normalized: pa.LargeStringArray, n: int, short_lengths: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the word n-grams of each text and the index of the text owning each."""
    words, word_offsets = word_hashes(normalized)
    lengths = np.array(sorted(set(short_lengths or [])), np.int64)
    return _ngram_hashes(words, word_offsets, n, lengths)


@functools.cache  # half a second of numerical integration, asked for per shard and per pool
def weighted_bands(
    threshold: float, num_perm: int, false_positive_weight: float, false_negative_weight: float
) -> tuple[int, int]:
    """(bands, rows) minimising datasketch's weighted false positive + negative areas."""
    weights = (false_positive_weight, false_negative_weight)
    return tuple(_optimal_param(threshold, num_perm, *weights))  # type: ignore[return-value]


def optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising equal-weight false positive + negative area (datasketch's)."""
    return weighted_bands(threshold, num_perm, 0.5, 0.5)


def word_shingles(text: str, shingle_size: int = 5) -> list[bytes]:
    """The shingles of one text as bytes (the reference for datasketch; see the module rules)."""
    words = normalize(pa.array([text], pa.string()))[0].as_py().split(" ")
    words = [w for w in words if w]
    if not words:
        return []
    if len(words) < shingle_size:
        return [" ".join(words).encode()]
    return [
        " ".join(words[i : i + shingle_size]).encode() for i in range(len(words) - shingle_size + 1)
    ]


def _fnv1a32(data: bytes) -> int:
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def _fmix32_py(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def shingle_hash32(shingle: bytes) -> int:
    """The 32-bit shingle hash (pure Python): pass it to datasketch as `hashfunc`."""
    words = [w for w in shingle.split(b" ") if w]
    h = 0
    for word in words:
        k = (_fnv1a32(word) * 0xCC9E2D51) & 0xFFFFFFFF
        k = ((k << 15) | (k >> 17)) & 0xFFFFFFFF
        k = (k * 0x1B873593) & 0xFFFFFFFF
        h ^= k
        h = ((h << 13) | (h >> 19)) & 0xFFFFFFFF
        h = (h * 5 + 0xE6546B64) & 0xFFFFFFFF
    h ^= 4 * len(words)
    return _fmix32_py(h)
