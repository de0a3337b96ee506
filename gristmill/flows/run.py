"""The whole recipe as one Prefect flow: ingest, every selector step, materialisation."""

from __future__ import annotations

from typing import Any

from prefect import flow

from gristmill.flows.tasks import curate_flow, ingest_flow, materialize_flow, task_runner
from gristmill.flows.zoo import zoo_build_flow
from gristmill.recipe import Recipe
from gristmill.storage.readers import IngestOptions
from gristmill.storage.workspace import Workspace


@flow(name="run-recipe")
def run_recipe_flow(
    recipe: Recipe,
    workspace: str | None = None,
    runner: str = "threads",
    workers: int | None = None,
) -> dict[str, Any]:
    """Run a validated recipe; each stage is a sub-flow, so the UI shows them separately."""
    ws = Workspace(workspace or recipe.workspace)
    # A sub-flow uses its own task runner, so the recipe's choice is passed down explicitly.
    ingest = ingest_flow.with_options(task_runner=task_runner(runner, workers))
    curate = curate_flow.with_options(task_runner=task_runner(runner, workers))
    results: dict[str, Any] = {"workspace": str(ws.root), "ingest": [], "select": [], "out": []}
    with ws.write_lock(f"run {recipe.name}"):
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
    return results
