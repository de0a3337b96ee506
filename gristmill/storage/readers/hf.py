"""Hugging Face datasets: a directory saved with save_to_disk, or a Hub name streamed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gristmill.errors import InputError
from gristmill.storage.readers.extract import Extractor
from gristmill.storage.readers.inputs import _UNREADABLE, _unreadable_input
from gristmill.storage.readers.options import Chunk, IngestOptions, Parsed


def _hub_offline() -> bool:
    flags = (os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(v.strip().lower() in {"1", "true", "yes", "on"} for v in flags)


def plan_hf(path: str, source: str, fmt: str, options: IngestOptions) -> list[Chunk]:
    """A dataset's chunks: one per split (a Hub name is streamed, so not fingerprinted)."""
    import datasets

    if not Path(path).exists():
        if _hub_offline():
            raise InputError(
                f"{path}: not a local dataset directory, and the Hugging Face Hub is offline "
                "(HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set); save the dataset with "
                "`save_to_disk` and ingest that directory"
            )
        splits = [options.hf_split] if options.hf_split else ["train"]
        return [Chunk(path, f"{source}/{s}", "hf", f"hub:{path}", split=s) for s in splits]
    try:
        loaded = datasets.load_from_disk(path)
    except Exception as error:  # datasets raises several types for a bad directory
        message = f"{path}: not a Hugging Face dataset saved with save_to_disk ({error})"
        raise InputError(message) from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = [options.hf_split] if options.hf_split else list(loaded)
        missing = [s for s in splits if s not in loaded]
        if missing:
            raise InputError(f"{path}: no split {missing[0]!r} (splits: {', '.join(loaded)})")
    else:
        splits = [None]
    fingerprint = f"hf:{loaded._fingerprint if splits == [None] else ''}"
    if splits != [None]:
        fingerprint += ",".join(f"{s}={loaded[s]._fingerprint}" for s in splits)
    return [
        Chunk(path, f"{source}/{s}" if s else source, "hf", fingerprint, split=s) for s in splits
    ]


def read_hf(chunk: Chunk, options: IngestOptions, extractor: Extractor) -> Iterator[Parsed]:
    import datasets

    if chunk.fingerprint.startswith("hub:"):
        stream = datasets.load_dataset(chunk.path, split=chunk.split, streaming=True)
        batch: list[tuple[int, Any, bytes]] = []
        for number, record in enumerate(stream, start=1):
            batch.append((number, record, b""))
            if len(batch) >= 10_000:
                yield extractor.from_dicts(batch)
                batch = []
        yield extractor.from_dicts(batch)
        return
    try:
        loaded = datasets.load_from_disk(chunk.path)
    except _UNREADABLE as error:
        raise _unreadable_input(chunk.path, error) from None
    dataset = loaded[chunk.split] if chunk.split is not None else loaded
    row = 1
    for table in dataset.with_format("arrow").iter(batch_size=16_384):
        lines = np.arange(row, row + table.num_rows, dtype=np.int64)
        row += table.num_rows
        yield extractor.from_table(table, lines)
