"""File helpers shared by everything that writes the workspace: atomic writes, content hashes."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def _staging_name(path: Path) -> Path:
    """A hidden temporary name beside `path`, unique to this process and thread."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file under a temporary name, then rename it into place: a reader sees the
    old file or the new one, never part of one, and a failed write leaves no temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _staging_name(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(
    path: Path,
    value: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = str,
) -> None:
    """Write `value` as JSON atomically (see `write_text_atomic`); encoded before any file opens."""
    text = json.dumps(value, indent=indent, sort_keys=sort_keys, default=default)
    write_text_atomic(path, text)


def resolve_model_path(name_or_path: str, models_root: Path | None = None) -> str:
    """A workspace model name (models/<name>), a local directory, or a hub name as given."""
    if models_root is not None and (models_root / name_or_path / "config.json").exists():
        return str(models_root / name_or_path)
    expanded = Path(name_or_path).expanduser()
    if expanded.exists():
        return str(expanded.resolve())
    return name_or_path


def model_fingerprint(path: str | None) -> str | None:
    """Content hashes of a local model's weights and configs, so a retrained model rescores."""
    if path is None:
        return None
    directory = Path(path)
    files = sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.json"))
    return ",".join(f"{f.name}:{file_hash(f)}" for f in files) or path
