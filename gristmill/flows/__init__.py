"""Prefect flows over the library: ingest, curate, materialize, experiments and whole recipes."""

from gristmill.flows.api_server import tie_temporary_server_to_this_process
from gristmill.flows.experiment import experiment_flow
from gristmill.flows.run import run_recipe_flow
from gristmill.flows.serve import serve_recipe
from gristmill.flows.tasks import curate_flow, ingest_flow, materialize_flow, task_runner
from gristmill.flows.zoo import zoo_build_flow

# Whenever Prefect starts a temporary API server for these flows, it dies with this process.
tie_temporary_server_to_this_process()

__all__ = [
    "curate_flow",
    "experiment_flow",
    "ingest_flow",
    "materialize_flow",
    "run_recipe_flow",
    "serve_recipe",
    "task_runner",
    "zoo_build_flow",
]
