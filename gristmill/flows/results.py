"""Task results in the workspace as JSON, read back only if they are gristmill's own records.

Prefect pickles task results by default, and reads a result back with whatever serializer its
record names, so a crafted file under `prefect-results/` would run code when a flow resumes.
gristmill's worker tasks return plain records (`ChunkResult`, `SignalInfo`); they are written
with `ResultJSONSerializer`, and a record that names any other serializer, or whose value does
not decode to one of those types, reads as absent: the task runs again and overwrites it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Literal

from prefect import Task
from prefect._internal.compatibility.async_dispatch import async_dispatch
from prefect.filesystems import LocalFileSystem
from prefect.serializers import Serializer
from pydantic import TypeAdapter

from gristmill.selectors.scoring import SignalInfo
from gristmill.storage.catalog import ChunkResult

logger = logging.getLogger(__name__)
SERIALIZER_TYPE = "gristmill-json"
# The only things a worker task may return and a resumed flow may read back.
RESULT_TYPES: dict[str, type] = {cls.__name__: cls for cls in (ChunkResult, SignalInfo)}


class ResultJSONSerializer(Serializer):
    """JSON for gristmill's task result records; refuses every other type, both ways."""

    type: Literal["gristmill-json"] = SERIALIZER_TYPE

    def dumps(self, obj: Any) -> bytes:
        """`{"type": <record type>, "value": <its fields>}` as UTF-8 JSON."""
        name = type(obj).__name__
        if RESULT_TYPES.get(name) is not type(obj):
            raise TypeError(f"not a gristmill task result: {type(obj).__qualname__}")
        return json.dumps({"type": name, "value": dataclasses.asdict(obj)}).encode()

    def loads(self, blob: bytes) -> Any:
        """The record `dumps` wrote; ValueError for anything else."""
        try:
            data = json.loads(blob)
            record_type = RESULT_TYPES[data["type"]]
            return TypeAdapter(record_type).validate_python(data["value"])
        except (ValueError, KeyError, TypeError) as error:  # pydantic's errors are ValueErrors
            reason = str(error).splitlines()[0]
            raise ValueError(f"not a gristmill task result ({reason})") from None


class ResultRecords(LocalFileSystem):
    """Prefect's result records (the metadata naming the serializer and the value's file).

    A record is read back only when it names `ResultJSONSerializer` and a value file under
    `values` that decodes with it; anything else raises, which Prefect's cache lookup takes
    for "no cached result".
    """

    _block_type_name = "gristmill result records"
    values: str

    async def aread_path(self, path: str) -> bytes:
        """The record at `path`, if it is one of gristmill's own."""
        return self._checked(path, await super().aread_path(path))

    @async_dispatch(aread_path)
    def read_path(self, path: str) -> bytes:
        """The record at `path`, if it is one of gristmill's own."""
        return self._checked(path, super().read_path(path, _sync=True))

    def _checked(self, path: str, content: bytes) -> bytes:
        try:
            record = json.loads(content)
            if record["serializer"] != {"type": SERIALIZER_TYPE}:
                raise ValueError(f"names serializer {record['serializer']!r}")
            values = Path(self.values).resolve()
            value = Path(record["storage_key"]).resolve()
            if value.parent != values:
                raise ValueError(f"names a value outside {values}")
            ResultJSONSerializer().loads(value.read_bytes())
        except (ValueError, KeyError, TypeError, OSError) as error:
            logger.warning("ignored task result record %s: %s", path, error)
            raise ValueError(f"{path}: not a gristmill task result record ({error})") from None
        return content


def with_results_in(task: Task, results_dir: Path) -> Task:
    """`task`, its results kept in `results_dir` as JSON and read back only as gristmill's own."""
    values = results_dir / "values"
    records = ResultRecords(basepath=str(results_dir / "records"), values=str(values))
    return task.with_options(
        result_storage=values,
        cache_policy=task.cache_policy.configure(key_storage=records),
    )
