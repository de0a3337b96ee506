"""Write a selection's documents out of the workspace."""

from __future__ import annotations

import os
from typing import Any

from gristmill.pipeline.ingestion import as_workspace
from gristmill.storage import exporters
from gristmill.storage.exporters import ExportFormat
from gristmill.storage.workspace import Workspace


def materialize(
    workspace: Workspace | str | os.PathLike[str],
    selection: str,
    out: str,
    fmt: ExportFormat = "parquet",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a selection's documents to the directory `out` in `fmt`."""
    return exporters.materialize(as_workspace(workspace), selection, out, fmt, overwrite)
