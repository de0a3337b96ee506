"""The whole recipe as one Prefect flow: ingest, every selector step, materialisation and the
experiment, each stage a sub-flow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from gristmill.flows.experiment import experiment_flow
from gristmill.flows.tasks import cluster, curate_flow, ingest_flow, materialize_flow, task_runner
from gristmill.flows.ui import progress_artifacts
from gristmill.flows.zoo import zoo_build_flow
from gristmill.recipe import Recipe, load_recipe
from gristmill.storage.readers import IngestOptions
from gristmill.storage.workspace import Workspace


@flow(name="run-recipe", persist_result=False)
def run_recipe_flow(
    recipe: Recipe | str,
    workspace: str | None = None,
    runner: str = "threads",
    workers: int | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    """Run a recipe, or a recipe file read when the run starts (as a scheduled run does)."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(Path(recipe))
    ws = Workspace(workspace or recipe.workspace)
    results: dict[str, Any] = {"workspace": str(ws.root), "ingest": [], "select": [], "out": []}
    # The lock first: a second run of the recipe must not start a cluster it cannot use.
    with (
        ws.write_lock(f"run {recipe.name}"),
        progress_artifacts(),
        cluster(runner, workers, address) as stage_address,
    ):
        # A sub-flow uses its own task runner, so the recipe's choice is passed down explicitly.
        ingest = ingest_flow.with_options(task_runner=task_runner(runner, workers, stage_address))
        curate = curate_flow.with_options(task_runner=task_runner(runner, workers, stage_address))
        for step in recipe.ingest:
            options = IngestOptions(**step.model_dump(exclude={"corpus", "paths"}))
            results["ingest"].append(ingest(str(ws.root), step.paths, step.corpus, options))
        results["zoo"] = [
            zoo_build_flow(str(ws.root), step.corpus, step.name, step.zoo_config())
            for step in recipe.zoo
        ]
        for step in recipe.select:
            assert step.corpus is not None
            results["select"].append(
                curate(
                    str(ws.root),
                    step.corpus,
                    step.selector,
                    params=step.params,
                    budget=step.budget,
                    name=step.name,
                    target=step.target,
                    input_selection=step.input if step.input != step.corpus else None,
                    options=step.select_options(),
                    recipe=recipe.model_dump(mode="json"),
                )
            )
        for out in recipe.materialize:
            results["out"].append(
                materialize_flow(str(ws.root), out.selection, out.out, out.format, out.overwrite)
            )
        if recipe.experiment is not None:
            # Training runs in this process's threads: its tasks hold models in memory.
            results["experiment"] = experiment_flow(str(ws.root), recipe.experiment)
    return results
