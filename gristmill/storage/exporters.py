"""Exporters: write a selection's documents as Parquet, JSONL or a Hugging Face dataset.

Token shards (pipeline/tokens.py) use the same destination checks and swap: `check_destination`,
`staging_prefix`, `swap_in`.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Literal

import duckdb

from gristmill.errors import InputError
from gristmill.storage import catalog
from gristmill.storage.files import sql_files
from gristmill.storage.workspace import Workspace

ExportFormat = Literal["parquet", "jsonl", "hf"]
EXPORT_FORMATS = ("parquet", "jsonl", "hf")
# Written into every export; --overwrite only ever replaces a directory that has it.
MARKER = ".gristmill-export"


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def materialize(
    workspace: Workspace,
    selection: str,
    out: str | os.PathLike[str],
    fmt: ExportFormat = "parquet",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the selected documents in rank order to `out`; returns the files and counts."""
    if fmt not in EXPORT_FORMATS:
        raise InputError(f"unknown export format {fmt!r} (use one of {', '.join(EXPORT_FORMATS)})")
    out_dir = Path(out).expanduser().resolve()
    check_destination(workspace, out_dir, overwrite)
    with workspace.catalog(read_only=True) as con:
        record = catalog.get_selection(con, selection)
        shards = workspace.shard_files(con, record["corpus"])
    members = workspace.members_path(selection)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the destination, then swap it in, so a failed export leaves nothing half-done.
    _remove_stale_staging(out_dir)
    prefix = f"{staging_prefix(out_dir)}{os.getpid()}-"
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=out_dir.parent))
    try:
        query = (
            "select d.doc_id, d.text, d.domain, d.source, d.source_line, "
            + ("json(d.meta) as meta" if fmt == "jsonl" else "d.meta")
            + ", d.n_bytes, m.rank, m.weight "
            f"from read_parquet({sql_files([members])}) m "
            f"join read_parquet({sql_files(shards)}) d using (doc_id) order by m.rank"
        )
        with duckdb.connect() as con:
            if fmt == "jsonl":
                target = staging / "data.jsonl"
                con.execute(f"copy ({query}) to {_quoted(target)} (format json)")
            else:
                target = staging / "data.parquet"
                con.execute(
                    f"copy ({query}) to {_quoted(target)} "
                    "(format parquet, compression zstd, row_group_size 50000)"
                )
            rows = con.sql(f"select count(*) from read_parquet({sql_files([members])})").fetchall()
        if fmt == "hf":
            _parquet_to_hf(target, staging)
        swap_in(staging, out_dir, selection)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*") if p.is_file())
    return {"selection": selection, "format": fmt, "out": str(out_dir), "documents": rows[0][0],
            "files": files}  # fmt: skip


def staging_prefix(out_dir: Path) -> str:
    """`.<name>.tmp-<host>-`; a staging directory adds `<pid>-<random>`, so that one left by a
    killed export can be told from one in use."""
    return f".{out_dir.name}.tmp-{socket.gethostname()}-"


def swap_in(staging: Path, out_dir: Path, selection: str) -> None:
    """Mark a finished staging directory as an export and put it in place of `out_dir`."""
    (staging / MARKER).write_text(f"gristmill export of selection {selection}\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(staging, out_dir)


def _remove_stale_staging(out_dir: Path) -> None:
    """Remove the staging directories that exports to `out_dir` killed on this host left.

    A staging directory is stale when the process named in it is gone; one of another host, of
    another destination or of a running export is left alone.
    """
    prefix = staging_prefix(out_dir)
    named = re.compile(re.escape(prefix) + r"(\d+)-[^-]+")
    for path in out_dir.parent.glob(glob.escape(prefix) + "*"):
        match = named.fullmatch(path.name)
        if match and path.is_dir() and not _process_alive(int(match[1])):
            shutil.rmtree(path, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    return True


def check_destination(workspace: Workspace, out_dir: Path, overwrite: bool) -> None:
    """Refuse destinations whose replacement could destroy anything but an earlier export."""
    root = workspace.root
    if out_dir == root or root.is_relative_to(out_dir) or out_dir.is_relative_to(root / "corpora"):
        raise InputError(f"{out_dir}: refusing to export over or around the workspace {root}")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()):
        # --overwrite only ever replaces an earlier gristmill export: say which case this is.
        if not (out_dir / MARKER).exists():
            raise InputError(
                f"{out_dir}: not empty and not an earlier gristmill export; refusing to replace "
                "it (--overwrite replaces only an earlier export): choose an empty directory"
            )
        if not overwrite:
            raise InputError(
                f"{out_dir}: output directory holds an earlier gristmill export; pass "
                "--overwrite to replace it"
            )


def _parquet_to_hf(parquet: Path, staging: Path) -> None:
    """Turn the staged Parquet file into a `save_to_disk` dataset in the staging directory."""
    import datasets

    # Inside the staging directory, so that an export killed here leaves nothing else behind.
    with tempfile.TemporaryDirectory(dir=staging) as cache:
        dataset = datasets.Dataset.from_parquet(str(parquet), cache_dir=cache)
        hf_dir = Path(cache) / "dataset"
        dataset.save_to_disk(str(hf_dir))
        del dataset
        parquet.unlink()
        for item in hf_dir.iterdir():
            shutil.move(str(item), staging / item.name)
