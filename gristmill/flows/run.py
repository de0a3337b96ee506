"""The whole recipe as one Prefect flow: ingest, every selector step, materialisation and the
experiment, each stage a sub-flow."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from gristmill import pipeline
from gristmill.flows.experiment import experiment_flow
from gristmill.flows.tasks import (
    cluster,
    curate_flow,
    ingest_flow,
    materialize_flow,
    task_runner,
    transform_flow,
)
from gristmill.flows.ui import progress_artifacts, publish_recipe
from gristmill.flows.zoo import zoo_build_flow
from gristmill.pipeline.checks import check_recipe
from gristmill.recipe import Recipe, load_recipe
from gristmill.storage.readers import IngestOptions
from gristmill.storage.workspace import Workspace

# The log's note on a step that had nothing to do, so ran in this flow, not a sub-flow.
UP_TO_DATE = " (up to date: no sub-flow)"


def _recipe_run_name() -> str:
    """`recipe quickstart`: the recipe's name (a served run reads its file now), else the file's."""
    recipe = flow_run.parameters["recipe"]
    if isinstance(recipe, Recipe):
        return f"recipe {recipe.name}"
    if isinstance(recipe, dict) and "name" in recipe:
        return f"recipe {recipe['name']}"
    try:
        return f"recipe {load_recipe(Path(str(recipe))).name}"
    except Exception:  # the run itself then fails on the file, saying why
        return f"recipe {Path(str(recipe)).name}"


@flow(name="run-recipe", flow_run_name=_recipe_run_name, persist_result=False)
def run_recipe_flow(
    recipe: Recipe | str,
    workspace: str | None = None,
    runner: str = "threads",
    workers: int | None = None,
    address: str | None = None,
    checked: bool = False,
) -> dict[str, Any]:
    """Run a recipe, or a recipe file read when the run starts (as a scheduled run does);
    `checked`: the caller (the CLI) has just checked the recipe against this workspace."""
    if not isinstance(recipe, Recipe):
        recipe, checked = load_recipe(Path(recipe)), False
    ws = Workspace(workspace or recipe.workspace)
    if not checked:  # a served run reads its recipe now: checked before any step
        check_recipe(recipe, ws)
    logger = get_run_logger()
    results: dict[str, Any] = {"workspace": str(ws.root), "ingest": [], "select": [], "out": []}
    # The lock first: a second run of the recipe must not start a cluster it cannot use.
    with (
        ws.write_lock(f"run {recipe.name}"),
        progress_artifacts(),
        cluster(runner, workers, address) as stage_address,
    ):
        # A sub-flow uses its own task runner, so the recipe's choice is passed down explicitly
        # (not the default, threads on every CPU, the flows' own: a copy redoes its parameter
        # schema, 0.1-0.2 CPU-s per flow).
        def staged(stage: Any) -> Any:
            if runner == "threads" and (workers or os.cpu_count()) == os.cpu_count():
                return stage
            return stage.with_options(task_runner=task_runner(runner, workers, stage_address))

        ingest, curate, rewrite = (staged(f) for f in (ingest_flow, curate_flow, transform_flow))
        for step in recipe.ingest:
            options = IngestOptions(**step.model_dump(exclude={"corpus", "paths"}))
            # An up-to-date step gets no sub-flow: it would be ~0.15 s of API calls for nothing
            # (a flow run, its tracking task run and their states, profiled on the warm runner).
            done = pipeline.ingest_if_done(ws, step.paths, step.corpus, options)
            if done is not None:
                report = done.as_dict()
            else:
                report = ingest(str(ws.root), step.paths, step.corpus, options)
            results["ingest"].append(report)
            added = report["added"]
            logger.info(
                "ingest %s: +%s documents, +%s rejected of %s records read (%s of %s chunks "
                "already done); corpus %s documents%s",
                step.corpus, f"{added['documents']:,}", f"{added['rejected']:,}",
                f"{added['records_read']:,}", report["chunks_skipped"], report["chunks"],
                f"{report['stats']['documents']:,}", UP_TO_DATE if done is not None else "",
            )  # fmt: skip
        results["transform"] = []
        for step in recipe.transform:
            assert step.corpus is not None
            report = rewrite(str(ws.root), step.corpus, step.specs(), step.name,
                             recipe=recipe.model_dump(mode="json", by_alias=True))  # fmt: skip
            results["transform"].append(report)
            logger.info(
                "transform %s into %s: %s of %s documents kept (%s shards rewritten, %s reused)",
                step.corpus, step.name, f"{report['documents']:,}",
                f"{report['documents_read']:,}", report["shards_done"], report["shards_reused"],
            )  # fmt: skip
        results["zoo"] = []
        for step in recipe.zoo:
            built = zoo_build_flow(str(ws.root), step.corpus, step.name, step.zoo_config())
            results["zoo"].append(built)
            logger.info("zoo %s from %s: %s", step.name, step.corpus, built["zoo"])
        for step in recipe.select:
            assert step.corpus is not None
            arguments = {
                "params": step.params,
                "budget": step.budget,
                "name": step.name,
                "target": step.target,
                "options": step.select_options(),
                "recipe": recipe.model_dump(mode="json"),
            }
            parent = step.input if step.input != step.corpus else None
            current = pipeline.curate_if_current(
                ws, step.corpus, step.selector, parent=parent, **arguments
            )
            if current is not None:
                curation = current.as_dict()
            else:
                curation = curate(
                    str(ws.root), step.corpus, step.selector, input_selection=parent, **arguments
                )
            results["select"].append(curation)
            record = curation["selection"]
            logger.info(
                "select %s (%s, budget %s) from %s: kept %s of %s; %s shards scored, %s reused%s",
                record["name"], record["selector"], record["budget"] or "none",
                step.input or step.corpus, f"{record['n_selected']:,}",
                f"{record['n_candidates']:,}",
                curation["shards_scored"], curation["shards_reused"],
                UP_TO_DATE if current is not None else "",
            )  # fmt: skip
        for out in recipe.materialize:
            tokens = out.tokenize_options()
            written = materialize_flow(
                str(ws.root), out.selection, out.out, out.format, out.overwrite,
                asdict(tokens) if tokens else None,
            )  # fmt: skip
            results["out"].append(written)
            logger.info(
                "materialize %s: %s documents -> %s",
                out.selection, f"{written['documents']:,}", written["out"],
            )  # fmt: skip
        if recipe.experiment is not None:
            # Training runs in this process's threads: its tasks hold models in memory.
            results["experiment"] = experiment_flow(str(ws.root), recipe.experiment)
            logger.info(
                "experiment %s: report %s/report.md",
                results["experiment"]["run_id"], results["experiment"]["run_dir"],
            )  # fmt: skip
    publish_recipe(recipe.name, results)
    return results
