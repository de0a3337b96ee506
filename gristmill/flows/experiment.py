"""The experiment flow: base model, then each arm and seed as a task, then the results.

The run id derives from the experiment's settings, so running the same recipe again resumes
it: finished arms are read back, an interrupted one continues from its last checkpoint.
"""

from __future__ import annotations

import json
from typing import Any

import xxhash
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from gristmill.flows.heartbeats import stop_joining_heartbeats
from gristmill.flows.ui import artifact_key, progress_artifacts
from gristmill.storage import catalog
from gristmill.storage.files import write_json_atomic
from gristmill.storage.workspace import Workspace
from gristmill.training.config import ExperimentSpec
from gristmill.training.report import aggregate, inline_plots, write_plot, write_report

stop_joining_heartbeats()  # also when this flow runs without flows/tasks.py


def run_id_for(spec: ExperimentSpec, versions: dict[str, str | None]) -> str:
    """`<name>-<hash of the settings and data versions>`: the same experiment on the same data
    always gets the same run; changed data or a rebuilt selection starts a new one."""
    settings = json.dumps([spec.model_dump(mode="json"), versions], sort_keys=True)
    return f"{spec.name}-{xxhash.xxh3_64_hexdigest(settings.encode())[:10]}"


@task(name="base-model", cache_policy=NO_CACHE, persist_result=False)
def base_model_task(root: str, spec: ExperimentSpec) -> str:
    """Load or pretrain the base model."""
    from gristmill.training import experiment as lib

    return lib.prepare_base(Workspace(root), spec)


@task(name="arm", cache_policy=NO_CACHE, persist_result=False, task_run_name="arm-{arm}-seed{seed}")
def arm_task(root: str, spec: ExperimentSpec, base: str, arm: str, seed: int) -> dict[str, Any]:
    """Continue pretraining (or pick the fine-tuning set), fine-tune and evaluate one arm."""
    from gristmill.training import experiment as lib

    result = lib.run_arm(Workspace(root), spec, base, arm, seed)
    rate = result.get("continued_tokens_per_s")
    get_run_logger().info(
        "arm %s seed %d: %s; continued pretraining %s tokens/s, MFU %s",
        arm,
        seed,
        result["metrics"],
        f"{rate:.0f}" if rate else "-",
        f"{result['continued_mfu']:.1%}" if result.get("continued_mfu") else "-",
    )
    return result


def _experiment_run_name() -> str:
    """`experiment quality-vs-random`, from the spec the run was given."""
    spec = flow_run.parameters["spec"]
    return f"experiment {spec['name'] if isinstance(spec, dict) else spec.name}"


@flow(name="experiment", flow_run_name=_experiment_run_name, persist_result=False)
def experiment_flow(workspace: str, spec: ExperimentSpec) -> dict[str, Any]:
    """Train and measure every arm; write metrics.json, report.md, a plot and a table artifact."""
    from gristmill.training import experiment as lib  # torch loads only when training

    ws = Workspace(workspace)
    with ws.write_lock(f"experiment {spec.name}"), progress_artifacts():
        lib.check_sources(ws, spec)
        versions = lib.data_versions(ws, spec)
        run_id = run_id_for(spec, versions)
        run_dir = ws.root / "runs" / run_id
        params = {**spec.model_dump(mode="json"), "data_versions": versions}
        run_dir.mkdir(parents=True, exist_ok=True)
        with ws.catalog() as con:
            catalog.record_run(con, run_id, "experiment", params, "running")
        try:
            base = base_model_task(str(ws.root), spec)
            results = [
                arm_task(str(ws.root), spec, base, arm, seed)
                for seed in spec.seeds
                for arm in spec.arms
            ]
        except BaseException:
            with ws.catalog() as con:
                catalog.record_run(con, run_id, "experiment", params, "failed", finished=True)
            raise
        table = aggregate(results, spec.arms)
        summary = {
            "run_id": run_id,
            "base_model": base,
            "base_training": {k: v for k, v in lib.base_summary(base).items() if k != "history"},
            "spec": params,
            "table": table,
            "runs": results,
        }
        write_json_atomic(run_dir / "metrics.json", summary)
        write_plot(table, run_dir / "metrics.png", f"{run_id}: metric per arm")
        write_report(run_dir / "report.md", run_id, params, table, results, "metrics.png")
        with ws.catalog() as con:
            catalog.record_run(con, run_id, "experiment", params, "done", table, finished=True)
    create_table_artifact(
        key=artifact_key("experiment", run_id),
        table=[
            {**row, "mean": round(row["mean"], 5), "std": round(row["std"], 5)} for row in table
        ],
        description=f"Experiment {run_id}: mean and standard deviation per arm and metric "
        f"({len(spec.seeds)} seeds). Report: {run_dir / 'report.md'}",
    )
    create_markdown_artifact(
        key=artifact_key("report", run_id),
        # The UI cannot read the run directory: the plot travels inside the markdown.
        markdown=inline_plots(run_dir / "report.md"),
        description=f"Experiment {run_id}: the report ({run_dir / 'report.md'})",
    )
    return {"run_id": run_id, "run_dir": str(run_dir), "table": table, "runs": results}
