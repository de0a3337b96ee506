"""Workspace, DuckDB catalog, Parquet shards, readers and exporters (no orchestration here)."""

from gristmill.storage.workspace import Workspace

__all__ = ["Workspace"]
