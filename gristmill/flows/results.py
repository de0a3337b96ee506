"""Task results in the workspace as JSON, read back only if they are gristmill's own records.

Prefect pickles task results by default, so a crafted file under `prefect-results/` could run
code when a flow resumes. gristmill's worker tasks cache each unit's plain record (the
`result_type` its unit function was registered with: `ChunkResult`, `SignalInfo`, ...)
themselves, as JSON written with `ResultJSONSerializer`; a file that does not decode to one of
those types reads as absent: the unit runs again and overwrites it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Literal

from prefect.serializers import Serializer
from pydantic import TypeAdapter

from gristmill.pipeline.units import result_types
from gristmill.storage.files import write_text_atomic

logger = logging.getLogger(__name__)
SERIALIZER_TYPE = "gristmill-json"


class ResultJSONSerializer(Serializer):
    """JSON for gristmill's task result records; refuses every other type, both ways."""

    type: Literal["gristmill-json"] = SERIALIZER_TYPE

    def dumps(self, obj: Any) -> bytes:
        """`{"type": <record type>, "value": <its fields>}` as UTF-8 JSON."""
        name = type(obj).__name__
        if result_types().get(name) is not type(obj):
            raise TypeError(f"not a gristmill task result: {type(obj).__qualname__}")
        return json.dumps({"type": name, "value": dataclasses.asdict(obj)}).encode()

    def loads(self, blob: bytes) -> Any:
        """The record `dumps` wrote; ValueError for anything else."""
        try:
            data = json.loads(blob)
            record_type = result_types()[data["type"]]
            return TypeAdapter(record_type).validate_python(data["value"])
        except (ValueError, KeyError, TypeError) as error:  # pydantic's errors are ValueErrors
            reason = str(error).splitlines()[0]
            raise ValueError(f"not a gristmill task result ({reason})") from None


class UnitResults:
    """Each finished unit's result under its own key, as `<directory>/<key>.json`.

    A group task runs many units; the units are cached one by one here, so a group that
    shares some units with one that ran before (a resumed run, a corpus grown by a shard)
    runs only the others. A file that does not decode as a gristmill record reads as absent.
    """

    def __init__(self, directory: Path, serializer: ResultJSONSerializer) -> None:
        self.directory = directory
        self.serializer = serializer

    def read(self, key: str) -> Any | None:
        """The result stored under `key`, or None."""
        path = self.directory / f"{key}.json"
        try:
            return self.serializer.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            logger.warning("ignored task result %s: %s", path, error)
            return None

    def write(self, key: str, result: Any) -> None:
        """Store `result` under `key` (atomically: a reader sees the old file or the new)."""
        write_text_atomic(self.directory / f"{key}.json", self.serializer.dumps(result).decode())
