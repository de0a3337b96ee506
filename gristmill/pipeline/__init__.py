"""The library pipeline: whole ingest, curation and materialisation steps as plain functions.

Notebooks, tests and benchmarks call these; the Prefect flows call them too, with a work map
that runs each unit as a Prefect task. Nothing here imports Prefect.
"""

from gristmill.pipeline.curation import Curation, curate
from gristmill.pipeline.export import materialize
from gristmill.pipeline.ingestion import IngestReport, ingest
from gristmill.pipeline.inspection import inspect_selection
from gristmill.pipeline.map import ThreadMap, WorkMap, serial_map
from gristmill.pipeline.units import ChunkUnit, ShardUnit, ingest_unit, score_unit

__all__ = [
    "ChunkUnit",
    "Curation",
    "IngestReport",
    "ShardUnit",
    "ThreadMap",
    "WorkMap",
    "curate",
    "ingest",
    "ingest_unit",
    "inspect_selection",
    "materialize",
    "score_unit",
    "serial_map",
]
