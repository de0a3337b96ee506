"""The zoo flow: train and evaluate a model zoo for the `perplexity_correlation` selector."""

from __future__ import annotations

from typing import Any

from prefect import flow

from gristmill.flows.heartbeats import stop_joining_heartbeats
from gristmill.storage.workspace import Workspace
from gristmill.training.zoo import ZooConfig, build_zoo, zoo_dir

stop_joining_heartbeats()  # also when this flow runs without flows/tasks.py


@flow(name="zoo-build", flow_run_name="zoo {name} from {corpus}", persist_result=False)
def zoo_build_flow(workspace: str, corpus: str, name: str, config: ZooConfig) -> dict[str, Any]:
    """Build the zoo `name` from `corpus` into <workspace>/zoos/<name> (finished models kept);
    the result also names the selector that takes the zoo."""
    # Imported here: the selector pulls in SciPy, which no other stage of a recipe needs.
    from gristmill.selectors.perplexity_correlation import PerplexityCorrelationSelector

    ws = Workspace(workspace)
    out_dir = zoo_dir(ws, name)
    with ws.write_lock(f"zoo build {name} from {corpus}"):
        built = build_zoo(ws, corpus, out_dir, config)
    return {**built, "selector": PerplexityCorrelationSelector.name}
