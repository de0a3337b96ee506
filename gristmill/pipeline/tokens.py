"""Selection -> token shards: the training-ready export (the format, the per-shard units and the
tokenizer loading are in storage/token_shards.py, so the training stage writes the same shards).

The documents are put in order (rank order, or a seeded shuffle), split by doc_id hash into
train and held-out, and cut into shards of `docs_per_shard`; each shard is one `TokenizeUnit`
that any work map can run (`tokenize_unit` is its worker side). A unit reads only its own
documents' text, a batch at a time, so memory does not grow with the selection. A rerun with
the same settings skips the shards finished before (the staging directory is kept until the
export is complete, then swapped in under the same overwrite rules as the text formats).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from gristmill.pipeline.ingestion import as_workspace
from gristmill.pipeline.map import WorkMap, serial_map
from gristmill.pipeline.units import work_unit
from gristmill.storage import catalog, exporters
from gristmill.storage import token_shards as shard_format
from gristmill.storage.files import file_hash, sql_files
from gristmill.storage.token_shards import (
    ShardSummary,
    TokenizeOptions,
    TokenizeUnit,
    file_hash_of_text,
    resolve_tokenizer,
    tokenizer_hash,
    write_token_shards,
)
from gristmill.storage.workspace import Workspace

__all__ = ["TokenizeOptions", "TokenizeUnit", "export_tokens", "ordered_doc_ids", "tokenize_unit"]


def _tokenize_title(group: list[TokenizeUnit]) -> str:
    """`tokenize train-00003 (50,000 documents)`, `tokenize train-00000 .. train-00004`."""
    if len(group) == 1:
        return f"tokenize {group[0].title()}"
    first, last = group[0].title().split()[0], group[-1].title().split()[0]
    return f"tokenize {first} .. {last} ({len(group)} shards)"


# The worker is storage's (the training stage writes the same shards with it); registered here,
# with the other kinds of work, so that a Prefect map runs it as `tokenize-shard` tasks.
tokenize_unit = work_unit("tokenize-shard", ShardSummary, _tokenize_title)(
    shard_format.tokenize_unit
)


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
