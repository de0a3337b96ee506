"""Token shards: a selection's documents as token ids a trainer reads directly.

An export directory holds, per split (`train`, and `heldout` when a held-out fraction is given)
and shard number K:

- `<split>-<K>.bin`: the token ids of the shard's documents, concatenated, little-endian
  `uint16` when the vocabulary fits, else `uint32` (each document is `[BOS] ids [EOS]`, as
  configured). This is nanoGPT's format: `np.memmap("train-00000.bin", dtype=np.uint16, mode="r")`
  is the shard's token stream (take the dtype from `manifest.json`).
- `<split>-<K>.idx`: the Megatron-LM / megatron-core `MMIDIDX` index of that `.bin` (one sequence
  per document: lengths in tokens and byte offsets), so that
  `megatron.core.datasets.indexed_dataset.IndexedDataset("<dir>/train-00000")` reads the shard
  as it is (a `uint32` shard is indexed as `int32`: the same bytes for every id below 2^31).
- `<split>-<K>.doc_ids.npy`: the gristmill `doc_id` (uint64) of each document, in shard order.
- `<split>-<K>.json`: the shard's counts, written last: a shard with it is finished.
- `manifest.json`: tokenizer (name, content hash, vocabulary size), dtype, BOS/EOS ids, order
  (rank or seeded shuffle), held-out fraction, per-split token and document counts, and the
  selection's record (corpus version, selector, config hash, recipe).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import xxhash

from gristmill.errors import InputError
from gristmill.storage.files import file_hash, resolve_model_path, sql_files, write_json_atomic
from gristmill.storage.token_encoder import DocumentEncoder
from gristmill.storage.workspace import Workspace

# How units run (pipeline/map.py has the thread and Prefect maps); the builtin map is serial.
WorkMap = Callable[[Callable[[Any], Any], Sequence[Any]], Iterable[Any]]

MANIFEST = "manifest.json"
TOKEN_CACHE = Path("runs") / "tokens"  # in a workspace: the training stage's token shards
SPLITS = ("train", "heldout")
SHARD_FILES = (".bin", ".idx", ".doc_ids.npy", ".json")  # after the stem; `.json` is written last
MEGATRON_HEADER = b"MMIDIDX\x00\x00"
MEGATRON_VERSION = 1
# megatron.core.datasets.indexed_dataset.DType codes; it has no uint32, int32 has the same bytes.
MEGATRON_DTYPE_CODES = {"uint16": 8, "uint32": 4}
# Files that decide how a Hugging Face tokenizer directory encodes text.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model",
                   "vocab.txt")  # fmt: skip


def heldout_mask(doc_ids: np.ndarray, fraction: float) -> np.ndarray:
    """True for the documents in the held-out split (splitmix64 of the id, deterministic)."""
    x = doc_ids.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x % np.uint64(1_000_000)) < np.uint64(round(fraction * 1_000_000))


def token_dtype(vocab_size: int) -> str:
    """`uint16` when every id fits in it, else `uint32`."""
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def tokenizer_hash(directory: Path) -> str:
    """Content hash of the files that decide a tokenizer directory's encoding."""
    parts = [f"{name}:{file_hash(directory / name)}" for name in TOKENIZER_FILES
             if (directory / name).is_file()]  # fmt: skip
    if not parts:
        raise InputError(f"{directory}: no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...)")
    return file_hash_of_text(",".join(parts))


def file_hash_of_text(text: str) -> str:
    """xxh3-128 of a string (hex), as file_hash is of a file."""
    return xxhash.xxh3_128(text.encode("utf-8")).hexdigest()


def shard_stem(split: str, shard: int) -> str:
    """`train-00003`: the name every file of a shard starts with."""
    return f"{split}-{shard:05d}"


@dataclass(frozen=True)
class ShardSummary:
    """What one finished shard holds."""

    split: str
    shard: int
    documents: int
    tokens: int
    stem: str  # the name every file of the shard starts with: `train-00003`
    hash: str  # xxh3-128 of the `.bin`, so a reader can check the token stream

    def as_dict(self) -> dict[str, Any]:
        """The shard's `.json` record."""
        return asdict(self)


class ShardWriter:
    """Write one shard: token ids appended document batch by batch, then its index files.

    Everything goes to hidden temporary names and is renamed into place by `finish`, the
    summary last, so a killed writer leaves no file a reader or a resumed export would trust.
    """

    def __init__(self, directory: Path, split: str, shard: int, dtype: str) -> None:
        self.directory = directory
        self.split = split
        self.shard = shard
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.dtype_name = dtype
        self.stem = shard_stem(split, shard)
        self._tmp = f".tmp-{os.getpid()}"
        self._bin_path = directory / f".{self.stem}.bin{self._tmp}"
        self._bin = open(self._bin_path, "wb")  # noqa: SIM115 (closed by finish/abort)
        self._hash = xxhash.xxh3_128()
        self._lengths: list[np.ndarray] = []
        self._doc_ids: list[np.ndarray] = []

    def append(self, tokens: np.ndarray, lengths: np.ndarray, doc_ids: np.ndarray) -> None:
        """Append documents: their concatenated ids, each one's length, and their doc_ids."""
        data = np.ascontiguousarray(tokens, dtype=self.dtype)
        self._bin.write(data)
        self._hash.update(data)
        self._lengths.append(np.asarray(lengths, dtype=np.int32))
        self._doc_ids.append(np.asarray(doc_ids, dtype=np.uint64))

    def finish(self) -> ShardSummary:
        """Write the index files and rename everything into place; returns the summary."""
        self._bin.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int32)
        doc_ids = np.concatenate(self._doc_ids) if self._doc_ids else np.zeros(0, np.uint64)
        final = self.directory / self.stem
        idx_tmp = self.directory / f".{self.stem}.idx{self._tmp}"
        ids_tmp = self.directory / f".{self.stem}.doc_ids.npy{self._tmp}"
        idx_tmp.write_bytes(megatron_index(lengths, self.dtype_name))
        with open(ids_tmp, "wb") as handle:
            np.save(handle, doc_ids, allow_pickle=False)
        os.replace(self._bin_path, final.with_name(f"{self.stem}.bin"))
        os.replace(idx_tmp, final.with_name(f"{self.stem}.idx"))
        os.replace(ids_tmp, final.with_name(f"{self.stem}.doc_ids.npy"))
        tokens = int(lengths.sum(dtype=np.int64))
        summary = ShardSummary(
            self.split, self.shard, len(lengths), tokens, self.stem, self._hash.hexdigest()
        )
        write_json_atomic(final.with_name(f"{self.stem}.json"), summary.as_dict())
        return summary

    def abort(self) -> None:
        """Close and remove the partial `.bin`."""
        self._bin.close()
        self._bin_path.unlink(missing_ok=True)


def megatron_index(lengths: np.ndarray, dtype: str) -> bytes:
    """The bytes of a megatron-core `.idx` file for one sequence per document."""
    itemsize = np.dtype(dtype).itemsize
    pointers = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths) > 1:
        np.cumsum(lengths[:-1].astype(np.int64) * itemsize, out=pointers[1:])
    document_indices = np.arange(len(lengths) + 1, dtype=np.int64)
    return b"".join([
        MEGATRON_HEADER,
        struct.pack("<Q", MEGATRON_VERSION),
        struct.pack("<B", MEGATRON_DTYPE_CODES[dtype]),
        struct.pack("<Q", len(lengths)),
        struct.pack("<Q", len(document_indices)),
        lengths.astype("<i4").tobytes(),
        pointers.astype("<i8").tobytes(),
        document_indices.astype("<i8").tobytes(),
    ])  # fmt: skip


def finished_shard(directory: Path, split: str, shard: int) -> ShardSummary | None:
    """The summary of a shard finished earlier, or None."""
    path = directory / f"{shard_stem(split, shard)}.json"
    if not path.exists():
        return None
    return ShardSummary(**json.loads(path.read_text(encoding="utf-8")))


class TokenShards:
    """Read an export: the manifest, each shard's token stream (memory-mapped) and index."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        manifest = self.directory / MANIFEST
        if not manifest.exists():
            raise InputError(f"{self.directory}: no {MANIFEST}; not a gristmill token export")
        self.manifest: dict[str, Any] = json.loads(manifest.read_text(encoding="utf-8"))
        self.dtype = np.dtype(self.manifest["dtype"]).newbyteorder("<")

    def shards(self, split: str = "train") -> list[str]:
        """The stems of a split's shards, in order."""
        return [s["stem"] for s in self.manifest["splits"].get(split, {}).get("shards", [])]

    def tokens(self, stem: str) -> np.ndarray:
        """A shard's token stream, memory-mapped (nanoGPT's reading)."""
        path = self.directory / f"{stem}.bin"
        if path.stat().st_size == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(path, dtype=self.dtype, mode="r")

    def lengths(self, stem: str) -> np.ndarray:
        """Each document's length in tokens, read from the shard's `.idx`."""
        data = (self.directory / f"{stem}.idx").read_bytes()
        header = len(MEGATRON_HEADER) + 8 + 1
        (count,) = struct.unpack_from("<Q", data, header)
        return np.frombuffer(data, dtype="<i4", count=count, offset=header + 16)

    def doc_ids(self, stem: str) -> np.ndarray:
        """The doc_id of each document of a shard."""
        return np.load(self.directory / f"{stem}.doc_ids.npy", allow_pickle=False)

    def documents(self, split: str = "train") -> Iterator[tuple[int, np.ndarray]]:
        """(doc_id, token ids) of every document of a split, in export order (views, no copy)."""
        for stem in self.shards(split):
            stream = self.tokens(stem)
            ends = np.cumsum(self.lengths(stem), dtype=np.int64)
            starts = ends - self.lengths(stem)
            for doc_id, start, end in zip(self.doc_ids(stem), starts, ends, strict=True):
                yield int(doc_id), stream[start:end]


@dataclass(frozen=True)
class TokenizeOptions:
    """How documents become token ids: the tokenizer, BOS/EOS, order, held-out split, shards."""

    tokenizer: str  # a local Hugging Face tokenizer directory or a workspace model's name
    bos: bool = False  # put the tokenizer's BOS token (or bos_id) before each document
    eos: bool = True  # put the tokenizer's EOS token (or eos_id) after each document
    bos_id: int | None = None
    eos_id: int | None = None
    shuffle_seed: int | None = None  # None: rank order
    heldout_fraction: float = 0.0
    docs_per_shard: int = 50_000
    batch_size: int = 1_000  # documents read and encoded at a time


@dataclass(frozen=True)
class TokenizeUnit:
    """Tokenize one shard's documents (doc_ids in shard order) of a corpus into `directory`."""

    root: str
    corpus: str
    split: str
    shard: int
    doc_ids: np.ndarray
    directory: str
    tokenizer_dir: str
    dtype: str
    bos_id: int | None
    eos_id: int | None
    batch_size: int

    def outputs_exist(self, result: ShardSummary) -> bool:
        """True while every file of the shard is still there (a swapped-in export moved them)."""
        directory = Path(self.directory)
        return all((directory / f"{result.stem}{suffix}").exists() for suffix in SHARD_FILES)

    def size_bytes(self) -> int | None:
        """Unknown before its texts are read: each shard is a task of its own (a shard of
        `docs_per_shard` documents is seconds of work, well above a task's cost)."""
        return None

    def title(self) -> str:
        """What the unit writes, for a person: `train-00003 (50,000 documents)`."""
        return f"{shard_stem(self.split, self.shard)} ({len(self.doc_ids):,} documents)"


def resolve_tokenizer(workspace: Workspace, name_or_path: str) -> Path:
    """The local directory of a tokenizer: a workspace model (models/<name>) or a path."""
    resolved = Path(resolve_model_path(name_or_path, workspace.root / "models"))
    if not resolved.is_dir():
        raise InputError(
            f"tokenizer {name_or_path!r}: not a local directory nor a workspace model "
            "(nothing is downloaded)"
        )
    return resolved


@dataclass(frozen=True)
class LoadedTokenizer:
    """A tokenizer directory's fast (Rust) tokenizer and its special tokens."""

    backend: Any  # tokenizers.Tokenizer
    encoder: DocumentEncoder
    bos_token_id: int | None
    eos_token_id: int | None
    vocab_size: int
    name: str


@functools.lru_cache(maxsize=4)
def _load(tokenizer_dir: str) -> LoadedTokenizer:
    """The directory's `tokenizer.json` read by `tokenizers` itself: transformers (and the torch
    it imports, about 5 s) only for a directory without one, to convert its slow tokenizer."""
    directory = Path(tokenizer_dir)
    config: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the config has the say
        if (directory / name).is_file():
            config.update(json.loads((directory / name).read_text(encoding="utf-8")))
    try:
        if (directory / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            backend = Tokenizer.from_file(str(directory / "tokenizer.json"))
        else:
            from transformers import AutoTokenizer

            backend = AutoTokenizer.from_pretrained(
                tokenizer_dir, local_files_only=True, use_fast=True
            ).backend_tokenizer
    except Exception as error:  # tokenizers raises plain Exception for a bad file
        raise InputError(f"tokenizer {tokenizer_dir}: could not be loaded: {error}") from None

    def special(key: str) -> int | None:
        token = config.get(key)
        token = token.get("content") if isinstance(token, dict) else token
        return None if token is None else backend.token_to_id(token)

    return LoadedTokenizer(backend, DocumentEncoder(backend), special("bos_token"),
                           special("eos_token"),
                           backend.get_vocab_size(with_added_tokens=True),
                           str(config.get("tokenizer_class", "Tokenizer")))  # fmt: skip


def _special_ids(
    tokenizer: LoadedTokenizer, options: TokenizeOptions
) -> tuple[int | None, int | None]:
    bos = options.bos_id if options.bos_id is not None else tokenizer.bos_token_id
    eos = options.eos_id if options.eos_id is not None else tokenizer.eos_token_id
    if options.bos and bos is None:
        raise InputError(f"tokenizer {options.tokenizer!r} has no BOS token: give bos_id")
    if options.eos and eos is None:
        raise InputError(f"tokenizer {options.tokenizer!r} has no EOS token: give eos_id")
    return (bos if options.bos else None), (eos if options.eos else None)


def documents_by_id(
    workspace: Workspace, corpus: str, doc_ids: np.ndarray, batch_size: int = 1_000
) -> Iterator[pa.RecordBatch]:
    """(doc_id, text) of a corpus's documents `doc_ids`, in that order, a batch at a time (held
    in memory: these documents' texts, not the corpus's)."""
    with workspace.catalog(read_only=True) as con:
        shards = workspace.shard_files(con, corpus)
    wanted = pa.table({"doc_id": pa.array(doc_ids, pa.uint64()),
                       "position": pa.array(np.arange(len(doc_ids)), pa.int64())})  # fmt: skip
    with duckdb.connect() as con:
        con.register("wanted", wanted)
        yield from con.sql(
            f"select w.doc_id, d.text from wanted w join read_parquet({sql_files(shards)}) d "
            "using (doc_id) order by w.position"
        ).to_arrow_reader(batch_size)


def encode_documents(
    encoder: DocumentEncoder,
    texts: list[str],
    bos_id: int | None,
    eos_id: int | None,
    dtype: np.dtype,
) -> tuple[np.ndarray, np.ndarray]:
    """The texts' token ids, each document `[BOS] ids [EOS]`, concatenated, and each one's
    length: one numpy array filled from the id lists, with no per-token Python."""
    ids = encoder.encode(texts)
    for document in ids:  # fresh lists, ours to change
        if bos_id is not None:
            document.insert(0, bos_id)
        if eos_id is not None:
            document.append(eos_id)
    lengths = np.fromiter(map(len, ids), np.int64, len(ids))
    tokens = np.fromiter(itertools.chain.from_iterable(ids), dtype, int(lengths.sum()))
    return tokens, lengths


def tokenize_unit(unit: TokenizeUnit) -> ShardSummary:
    """Tokenize one shard (the worker side); a shard finished before is returned as it is."""
    directory = Path(unit.directory)
    done = finished_shard(directory, unit.split, unit.shard)
    if done is not None:
        return done
    encoder = _load(unit.tokenizer_dir).encoder
    writer = ShardWriter(directory, unit.split, unit.shard, unit.dtype)
    found = 0
    try:
        workspace = Workspace(unit.root)
        for batch in documents_by_id(workspace, unit.corpus, unit.doc_ids, unit.batch_size):
            texts = batch.column("text").to_pylist()
            tokens, lengths = encode_documents(
                encoder, texts, unit.bos_id, unit.eos_id, writer.dtype
            )
            writer.append(tokens, lengths, batch.column("doc_id").to_numpy())
            found += len(texts)
        if found != len(unit.doc_ids):
            raise InputError(
                f"corpus {unit.corpus!r}: {len(unit.doc_ids) - found} of shard "
                f"{unit.split}-{unit.shard}'s documents are missing from its shards"
            )
        return writer.finish()
    except BaseException:
        writer.abort()
        raise


def plan_units(
    workspace: Workspace,
    corpus: str,
    doc_ids: np.ndarray,
    directory: Path,
    options: TokenizeOptions,
) -> tuple[list[TokenizeUnit], dict[str, Any]]:
    """The units that tokenize `doc_ids` (in this order) into `directory`, and the tokenizer's
    manifest entry."""
    tokenizer_dir = resolve_tokenizer(workspace, options.tokenizer)
    tokenizer = _load(str(tokenizer_dir))
    bos_id, eos_id = _special_ids(tokenizer, options)
    dtype = token_dtype(tokenizer.vocab_size)
    held = heldout_mask(doc_ids, options.heldout_fraction)
    units = []
    for split, ids in (("train", doc_ids[~held]), ("heldout", doc_ids[held])):
        size = options.docs_per_shard
        for shard, start in enumerate(range(0, len(ids), size)):
            units.append(TokenizeUnit(
                str(workspace.root), corpus, split, shard, ids[start : start + size],
                str(directory), str(tokenizer_dir), dtype, bos_id, eos_id, options.batch_size,
            ))  # fmt: skip
    described = {"name": options.tokenizer, "path": str(tokenizer_dir),
                 "hash": tokenizer_hash(tokenizer_dir), "vocab_size": tokenizer.vocab_size,
                 "class": tokenizer.name}  # fmt: skip
    return units, {"tokenizer": described, "dtype": dtype, "bos_id": bos_id, "eos_id": eos_id}


def write_token_shards(
    workspace: Workspace,
    corpus: str,
    doc_ids: np.ndarray,
    directory: Path,
    options: TokenizeOptions,
    work_map: WorkMap = map,
    about: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Tokenize `doc_ids` of a corpus into shards in `directory` (resumable) and its manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    units, described = plan_units(workspace, corpus, doc_ids, directory, options)
    summaries = sorted(work_map(tokenize_unit, units), key=lambda s: (s.split, s.shard))
    splits: dict[str, Any] = {}
    for split in ("train", "heldout"):
        mine = [s for s in summaries if s.split == split]
        if mine or split == "train":
            splits[split] = {"documents": sum(s.documents for s in mine),
                             "tokens": sum(s.tokens for s in mine),
                             "shards": [s.as_dict() for s in mine]}  # fmt: skip
    manifest = {
        "format": "gristmill-tokens/1",
        **described,
        "corpus": corpus,
        "order": "rank" if options.shuffle_seed is None else "shuffle",
        "shuffle_seed": options.shuffle_seed,
        "heldout_fraction": options.heldout_fraction,
        "documents": sum(s.documents for s in summaries),
        "tokens": sum(s.tokens for s in summaries),
        "splits": splits,
        **(about or {}),
    }
    write_json_atomic(directory / MANIFEST, manifest)
    return manifest


def cached_token_shards(
    workspace: Workspace,
    corpus: str,
    corpus_version: str,
    doc_ids: np.ndarray,
    options: TokenizeOptions,
    label: str,
    work_map: WorkMap = map,
) -> Path:
    """The directory of token shards of a corpus's documents `doc_ids` (in this order) in the
    workspace's `runs/tokens/<label>-<key>`: written once (resumable) and reused while the
    documents, their corpus's version, the tokenizer's files and the settings (the key's
    inputs) are the same."""
    tokenizer_dir = resolve_tokenizer(workspace, options.tokenizer)
    ids = np.ascontiguousarray(doc_ids, dtype="<u8")
    identity = [corpus, corpus_version, xxhash.xxh3_128_hexdigest(ids.tobytes()), asdict(options),
                tokenizer_hash(tokenizer_dir)]  # fmt: skip
    key = file_hash_of_text(json.dumps(identity, default=str))[:16]
    directory = workspace.root / TOKEN_CACHE / f"{label}-{key}"
    if not (directory / MANIFEST).exists():
        write_token_shards(workspace, corpus, ids, directory, options, work_map)
    return directory
