"""The library pipeline: whole ingest, curation and materialisation steps as plain functions.

Notebooks, tests and benchmarks call these; the Prefect flows call them too, with a work map
that runs each unit as a Prefect task. Nothing here imports Prefect. The names below are
imported when first used, so that `gristmill.pipeline.checks` loads without the whole pipeline
(the CLI's checks run before anything heavy is imported).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gristmill.pipeline.curation import Curation, curate, curate_if_current
    from gristmill.pipeline.export import materialize
    from gristmill.pipeline.ingestion import IngestReport, ingest, ingest_if_done
    from gristmill.pipeline.inspection import corpus_report, inspect_selection
    from gristmill.pipeline.map import ThreadMap, WorkMap, serial_map
    from gristmill.pipeline.transformation import TransformReport, transform, transform_examples
    from gristmill.pipeline.units import ChunkUnit, ShardUnit, ingest_unit, score_unit

_MODULE_OF = {
    "ChunkUnit": "units",
    "Curation": "curation",
    "IngestReport": "ingestion",
    "ShardUnit": "units",
    "ThreadMap": "map",
    "WorkMap": "map",
    "corpus_report": "inspection",
    "curate": "curation",
    "curate_if_current": "curation",
    "ingest": "ingestion",
    "ingest_if_done": "ingestion",
    "ingest_unit": "units",
    "inspect_selection": "inspection",
    "materialize": "export",
    "score_unit": "units",
    "serial_map": "map",
    "TransformReport": "transformation",
    "transform": "transformation",
    "transform_examples": "transformation",
}
__all__ = [
    "ChunkUnit",
    "Curation",
    "IngestReport",
    "ShardUnit",
    "ThreadMap",
    "TransformReport",
    "WorkMap",
    "corpus_report",
    "curate",
    "curate_if_current",
    "ingest",
    "ingest_if_done",
    "ingest_unit",
    "inspect_selection",
    "materialize",
    "score_unit",
    "serial_map",
    "transform",
    "transform_examples",
]


def __getattr__(name: str) -> Any:
    """The pipeline's public names, each imported from its module when first asked for."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value
