"""File helpers shared by everything that writes the workspace: atomic Parquet, content hashes."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

# zstd level 1: about twice as fast to write as level 3; files about 13% larger (IMDB text).
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 1}


def sql_files(paths: list[Path]) -> str:
    """A DuckDB list literal of file paths (workspace-generated paths, quoted all the same)."""
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def file_hash(path: Path) -> str:
    """Content hash of a file (xxh3-128, hex)."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """Write a Parquet file under a temporary name, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, **PARQUET_OPTIONS)
    os.replace(tmp, path)
