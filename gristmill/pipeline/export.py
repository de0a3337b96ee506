"""Write a selection's documents out of the workspace: text (Parquet, JSONL, a HF dataset) or
token shards a trainer reads directly."""

from __future__ import annotations

import os
from typing import Any, Literal

from gristmill.errors import InputError
from gristmill.pipeline.ingestion import as_workspace
from gristmill.pipeline.map import WorkMap, serial_map
from gristmill.storage import exporters
from gristmill.storage.token_shards import TokenizeOptions
from gristmill.storage.workspace import Workspace

MaterializeFormat = Literal["parquet", "jsonl", "hf", "tokens"]
FORMATS = (*exporters.EXPORT_FORMATS, "tokens")


def materialize(
    workspace: Workspace | str | os.PathLike[str],
    selection: str,
    out: str,
    fmt: MaterializeFormat = "parquet",
    overwrite: bool = False,
    tokens: TokenizeOptions | None = None,
    work_map: WorkMap = serial_map,
) -> dict[str, Any]:
    """Write a selection's documents to the directory `out` in `fmt`; `tokens` (the tokenizer,
    BOS/EOS, order, held-out split) is what the `tokens` format needs."""
    ws = as_workspace(workspace)
    if fmt != "tokens":
        return exporters.materialize(ws, selection, out, fmt, overwrite)  # type: ignore[arg-type]
    if tokens is None:
        raise InputError("format tokens needs a tokenizer (--tokenizer PATH or a workspace model)")
    from gristmill.pipeline.tokens import export_tokens

    return export_tokens(ws, selection, out, tokens, overwrite, work_map)
