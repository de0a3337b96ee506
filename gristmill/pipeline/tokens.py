"""Selection -> token shards: the training-ready export (file format: storage/token_shards.py).

The documents are put in order (rank order, or a seeded shuffle), split by doc_id hash into
train and held-out, and cut into shards of `docs_per_shard`; each shard is one `TokenizeUnit`
that any work map can run (`tokenize_unit` is its worker side). A unit reads only its own
documents' text, a batch at a time, so memory does not grow with the selection. A rerun with
the same settings skips the shards finished before (the staging directory is kept until the
export is complete, then swapped in under the same overwrite rules as the text formats).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from gristmill.errors import InputError
from gristmill.pipeline.ingestion import as_workspace
from gristmill.pipeline.map import WorkMap, serial_map
from gristmill.storage import catalog, exporters
from gristmill.storage.files import file_hash, resolve_model_path, sql_files, write_json_atomic
from gristmill.storage.token_shards import (
    MANIFEST,
    ShardSummary,
    ShardWriter,
    file_hash_of_text,
    finished_shard,
    heldout_mask,
    token_dtype,
    tokenizer_hash,
)
from gristmill.storage.workspace import Workspace


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
        """True while the shard's summary (written last) is still there."""
        return finished_shard(Path(self.directory), result.split, result.shard) is not None


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

    return LoadedTokenizer(backend, special("bos_token"), special("eos_token"),
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


def tokenize_unit(unit: TokenizeUnit) -> ShardSummary:
    """Tokenize one shard (the worker side); a shard finished before is returned as it is."""
    directory = Path(unit.directory)
    done = finished_shard(directory, unit.split, unit.shard)
    if done is not None:
        return done
    backend = _load(unit.tokenizer_dir).backend
    workspace = Workspace(unit.root)
    with workspace.catalog(read_only=True) as con:
        shards = workspace.shard_files(con, unit.corpus)
    wanted = pa.table({"doc_id": pa.array(unit.doc_ids, pa.uint64()),
                       "position": pa.array(np.arange(len(unit.doc_ids)), pa.int64())})  # fmt: skip
    writer = ShardWriter(directory, unit.split, unit.shard, unit.dtype)
    extra = (unit.bos_id is not None) + (unit.eos_id is not None)
    found = 0
    try:
        with duckdb.connect() as con:
            con.register("wanted", wanted)
            reader = con.sql(
                f"select w.doc_id, d.text from wanted w join read_parquet({sql_files(shards)}) d "
                "using (doc_id) order by w.position"
            ).to_arrow_reader(unit.batch_size)
            for batch in reader:
                texts = batch.column("text").to_pylist()
                encoded = backend.encode_batch_fast(texts, add_special_tokens=False)
                lengths = np.fromiter((len(e.ids) + extra for e in encoded), np.int64, len(texts))
                stream = np.empty(int(lengths.sum()), dtype=np.int64)
                position = 0
                for encoding, length in zip(encoded, lengths, strict=True):
                    if unit.bos_id is not None:
                        stream[position] = unit.bos_id
                    start = position + (unit.bos_id is not None)
                    stream[start : start + len(encoding.ids)] = encoding.ids
                    position += int(length)
                    if unit.eos_id is not None:
                        stream[position - 1] = unit.eos_id
                writer.append(stream, lengths, batch.column("doc_id").to_numpy())
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


def ordered_doc_ids(workspace: Workspace, selection: str, shuffle_seed: int | None) -> np.ndarray:
    """A selection's doc_ids in rank order, or shuffled by the seed."""
    members = workspace.members_path(selection)
    with duckdb.connect() as con:
        ids = con.sql(
            f"select doc_id from read_parquet({sql_files([members])}) order by rank"
        ).fetchnumpy()["doc_id"]
    ids = np.asarray(ids, dtype=np.uint64)  # doc_ids are uint64 (storage/ingest.py)
    if shuffle_seed is not None:
        ids = ids[np.random.default_rng(shuffle_seed).permutation(len(ids))]
    return ids


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
    work_map: WorkMap = serial_map,
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


def export_tokens(
    workspace: Workspace | str | os.PathLike[str],
    selection: str,
    out: str | os.PathLike[str],
    options: TokenizeOptions,
    overwrite: bool = False,
    work_map: WorkMap = serial_map,
) -> dict[str, Any]:
    """Write a selection's documents as token shards to the directory `out` (materialize's
    `tokens` format); a rerun with the same settings resumes an interrupted export."""
    workspace = as_workspace(workspace)
    out_dir = Path(out).expanduser().resolve()
    exporters.check_destination(workspace, out_dir, overwrite)
    with workspace.catalog(read_only=True) as con:
        record = catalog.get_selection(con, selection)
    members = workspace.members_path(selection)
    about = {"selection": {
        "name": selection, "members_hash": file_hash(members),
        **{k: record.get(k) for k in ("corpus", "corpus_version", "selector", "config_hash",
                                      "n_selected", "code_version", "recipe", "created_at")},
    }}  # fmt: skip
    tokenizer_dir = resolve_tokenizer(workspace, options.tokenizer)
    identity = json.dumps([about, asdict(options), tokenizer_hash(tokenizer_dir)], default=str)
    # Named by the settings (no pid), so that a rerun with the same ones finds its shards.
    key = file_hash_of_text(identity)[:16]
    staging = out_dir.parent / f"{exporters.staging_prefix(out_dir)}tokens-{key}"
    doc_ids = ordered_doc_ids(workspace, selection, options.shuffle_seed)
    manifest = write_token_shards(
        workspace, record["corpus"], doc_ids, staging, options, work_map, about
    )
    exporters.swap_in(staging, out_dir, selection)
    files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    return {"selection": selection, "format": "tokens", "out": str(out_dir),
            "documents": manifest["documents"], "tokens": manifest["tokens"],
            "files": files}  # fmt: skip
