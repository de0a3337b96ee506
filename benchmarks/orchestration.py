"""Orchestration overhead: a 100-shard recipe through Prefect vs the same library calls directly.

Splits `--copies` copies of a JSONL input (the IMDB test set from shared/data by default, 8
copies: 2.8 MB per shard) into 100 files, so the recipe has 100 ingest chunks and 100 shards
to score, and a recipe that ingests them and
selects half with the `quality` selector. Then, one after another and each in its own child
process, against one `gristmill server` this script starts (the Prefect server on 127.0.0.1
and the warm runner that runs `gristmill` commands with Prefect already imported, as README
recommends for real use; a command without a server would also start Prefect's temporary API,
which is a fixed few seconds per command and is reported separately):

* library: `pipeline.ingest` and `pipeline.curate` with a `ThreadMap` of `--workers` threads
  (the same steps the flows run, no Prefect; the catalog written in ~2 s batches);
* flow: `run_recipe_flow(...)` called in the child (the work, imports excluded);
* gristmill run: the command itself, timed from outside (imports and start-up included);
* the library child again on its workspace, and gristmill run again on its own: everything
  is cached, so these are the fixed costs;
* gristmill run again with GRISTMILL_WARM=0: the same without the server's warm runner;
* gristmill run without a server (Prefect's temporary API): the start-up cost on its own.

The library and flow figures are seconds inside the child around the calls; the `gristmill run`
figures are the child's wall time, and the library child's wall time is shown beside them;
their CPU includes that of the runner's child that ran the command.
Beside the library and flow figures are the CPU seconds (user + system) the child used during
the calls and those the Prefect server's process tree used meanwhile: on a small machine the
server's work for each task run competes with the workers for the same cores.
Each round runs every system once, in that order; the fastest of `--repeat` rounds counts.

    python benchmarks/orchestration.py --workers 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_INPUT = DATA_DIR / "imdb_test" / "imdb_test.jsonl"
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DO_NOT_TRACK": "1",
       "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}  # fmt: skip


def library_run(recipe_file: str, root: str, workers: int) -> None:
    """The recipe's ingest and select steps through the library pipeline on a thread pool."""
    from gristmill import pipeline
    from gristmill.recipe import load_recipe
    from gristmill.storage.readers import IngestOptions
    from gristmill.storage.workspace import Workspace

    recipe = load_recipe(recipe_file)
    ws = Workspace(root)
    threads = pipeline.ThreadMap(workers)
    for step in recipe.ingest:
        options = IngestOptions(**step.model_dump(exclude={"corpus", "paths"}))
        pipeline.ingest(ws, step.paths, step.corpus, options, work_map=threads)
    for step in recipe.select:
        assert step.corpus is not None
        pipeline.curate(ws, step.corpus, step.selector, params=step.params, budget=step.budget,
                        name=step.name, target=step.target, options=step.select_options(),
                        recipe=recipe.model_dump(mode="json"), work_map=threads)  # fmt: skip


def flow_run(recipe_file: str, root: str, workers: int) -> None:
    """The same recipe through the Prefect flow `gristmill run` calls."""
    from gristmill.flows import run_recipe_flow
    from gristmill.recipe import load_recipe

    run_recipe_flow(load_recipe(recipe_file), root, "threads", workers)


def child(mode: str, recipe_file: str, root: str, workers: int) -> None:
    """Run one system and print the seconds of its calls (imports excluded) as JSON."""
    import gristmill.selectors.quality
    import gristmill.storage.ingest

    if mode != "library":
        import gristmill.flows  # noqa: F401

    function = library_run if mode == "library" else flow_run
    start, cpu_start = time.perf_counter(), _own_cpu_seconds()
    function(recipe_file, root, workers)
    seconds, cpu = time.perf_counter() - start, _own_cpu_seconds() - cpu_start
    print(json.dumps({"seconds": seconds, "cpu": cpu}))


def _own_cpu_seconds() -> float:
    """User + system CPU seconds of this process, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (the Prefect server)."""
    import psutil

    try:
        root = psutil.Process(pid)
        total = 0.0
        for process in [root, *root.children(recursive=True)]:
            times = process.cpu_times()
            total += times.user + times.system
        return total
    except psutil.Error:
        return float("nan")


def prepare(source: Path, scratch: Path, files: int, copies: int = 1) -> Path:
    """Split `copies` copies of `source` into `files` JSONL files; write a recipe over them."""
    raw = scratch / "raw"
    raw.mkdir(parents=True)
    lines = source.read_bytes().splitlines(keepends=True) * copies
    per_file = -(-len(lines) // files)
    for f in range(files):
        (raw / f"part-{f:03d}.jsonl").write_bytes(
            b"".join(lines[f * per_file : (f + 1) * per_file])
        )
    recipe = scratch / "recipe.yaml"
    recipe.write_text(
        "name: bench\n"
        f"ingest:\n  - corpus: reviews\n    paths: [{raw}]\n    domain_field: label\n"
        "select:\n  - name: half\n    selector: quality\n    budget: 50%\n",
        encoding="utf-8",
    )
    return recipe


def runner_children_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of the children the warm runner `pid` has reaped: each
    command it ran (Linux /proc; 0 without a runner)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")  # cutime, cstime


def timed_command(
    command: list[str], env: dict[str, str], runner_pid: int | None = None
) -> tuple[float, dict[str, Any]]:
    """The command's wall seconds and its last stdout line as JSON, with "child_cpu": the
    CPU seconds (user + system) of the whole child process, imports included, and of the
    warm runner's child that ran the command for it, if any."""
    start = time.perf_counter()
    runner_before = runner_children_cpu(runner_pid)
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        stdout.seek(0)
        stderr.seek(0)
        output, errors = stdout.read().decode(), stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{errors[-3000:]}")
    last = output.strip().splitlines()[-1] if output.strip() else "{}"
    try:
        parsed = json.loads(last)
    except json.JSONDecodeError:
        parsed = {}
    parsed = parsed if isinstance(parsed, dict) else {}
    # The runner reaps its child before it answers the client: its CPU is counted by now.
    warm = runner_children_cpu(runner_pid) - runner_before
    return wall, {**parsed, "child_cpu": usage.ru_utime + usage.ru_stime + warm, "warm_cpu": warm}


GRISTMILL = [sys.executable, "-m", "gristmill.cli"]


def start_server(home: Path, env: dict[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
    """`gristmill server start` (the Prefect server on 127.0.0.1 and the warm runner) in
    GRISTMILL_HOME=home: the environment of commands that use it, and its state."""
    served = {**env, "GRISTMILL_HOME": str(home)}
    started = subprocess.run([*GRISTMILL, "server", "start", "--json"], env=served,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    if started.returncode != 0:
        raise SystemExit(f"gristmill server start failed:\n{started.stderr[-3000:]}")
    state = json.loads(started.stdout)
    if state.get("runner", {}).get("state") not in ("ready", "off"):
        raise SystemExit(f"the warm runner is not ready: {state.get('runner')}")
    # The API as the CLI would find it, for the flow children that call flows directly.
    return {**served, "PREFECT_API_URL": state["api_url"]}, state


def stop_server(served: dict[str, str] | None) -> None:
    """`gristmill server stop` for a server `start_server` started."""
    if served is not None:
        subprocess.run([*GRISTMILL, "server", "stop"], env=served, capture_output=True,
                       timeout=120)  # fmt: skip


def main() -> None:
    """Parse arguments, run every system and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2, help="rounds; the fastest counts")
    parser.add_argument("--copies", type=int, default=8, help="copies of the input (shard size)")
    parser.add_argument("--skip-temporary-api", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "RECIPE", "WORKSPACE"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2], args.workers)
        return
    if not args.input.exists():
        raise SystemExit(f"input not found: {args.input}")
    scratch = Path(tempfile.mkdtemp(prefix="gristmill-orch-"))
    served = None
    try:
        recipe = prepare(args.input, scratch, args.files, args.copies)
        env = {**os.environ, **ENV, "PREFECT_HOME": str(scratch / "prefect-home"),
               "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}  # fmt: skip
        served, state = start_server(scratch / "server-home", env)
        server_pid, runner_pid = state["pid"], state["runner"].get("pid")
        local_env = {**served, "GRISTMILL_WARM": "0"}
        me = [sys.executable, __file__, "--workers", str(args.workers), "--child"]
        # `python -m gristmill`: the light entry, which the console script is once it points
        # at gristmill.warm:main (pyproject.toml).
        gristmill = [sys.executable, "-m", "gristmill", "run", str(recipe),
                     "--workers", str(args.workers), "-w"]  # fmt: skip
        best: dict[str, float] = {}
        cpu: dict[str, str] = {}  # CPU seconds of the fastest round: the child's own, the server's

        def keep(
            name: str, seconds: float, own: float | None = None, server_cpu: float = 0
        ) -> None:
            if seconds <= best.get(name, seconds):
                best[name] = seconds
                cpu[name] = "" if own is None else f"{own:.1f} / {server_cpu:.1f}"
            shown = "" if own is None else f" (CPU: own {own:.1f} s, server {server_cpu:.1f} s)"
            print(f"round {round_}: {name} {seconds:.1f} s{shown}", flush=True)

        def timed(command: list[str]) -> tuple[float, dict[str, Any], float]:
            before = _tree_cpu_seconds(server_pid)
            wall, parsed = timed_command(command, served, runner_pid)
            return wall, parsed, _tree_cpu_seconds(server_pid) - before

        for round_ in range(args.repeat):
            ws = scratch / f"round-{round_}"
            lib_wall, lib, lib_server = timed([*me, "library", str(recipe), str(ws / "lib")])
            keep("library", lib["seconds"], lib["cpu"], lib_server)
            keep("library wall", lib_wall, lib["child_cpu"], lib_server)
            _, flow, flow_server = timed([*me, "flow", str(recipe), str(ws / "flow")])
            keep("flow", flow["seconds"], flow["cpu"], flow_server)
            run_wall, run, run_server = timed([*gristmill, str(ws / "run")])
            keep("run", run_wall, run["child_cpu"], run_server)
            # Everything cached: the library child again on its workspace, then the command.
            relib_wall, relib, relib_server = timed([*me, "library", str(recipe), str(ws / "lib")])
            keep("library again", relib_wall, relib["child_cpu"], relib_server)
            rerun_wall, rerun, rerun_server = timed([*gristmill, str(ws / "run")])
            keep("rerun", rerun_wall, rerun["child_cpu"], rerun_server)
            # The same without the warm runner: the command imports Prefect itself (before).
            before = _tree_cpu_seconds(server_pid)
            local_wall, local = timed_command([*gristmill, str(ws / "run")], local_env)
            keep(
                "rerun local",
                local_wall,
                local["child_cpu"],
                _tree_cpu_seconds(server_pid) - before,
            )
        ephemeral_wall = None
        if not args.skip_temporary_api:
            alone = {**env, "GRISTMILL_HOME": str(scratch / "no-server")}
            ephemeral_wall, _ = timed_command([*gristmill, str(scratch / "ws-ephemeral")], alone)
            print(f"gristmill run, temporary API: {ephemeral_wall:.1f} s wall", flush=True)
        lib_s, lib_wall, flow_s = best["library"], best["library wall"], best["flow"]
        run_wall, rerun_wall, relib_wall = best["run"], best["rerun"], best["library again"]
        rows = [
            ("library calls (no Prefect), seconds in the child", "library", None),
            ("run_recipe_flow, seconds in the child", "flow", flow_s / lib_s),
            ("library child, wall", "library wall", None),
            ("`gristmill run`, wall", "run", run_wall / lib_wall),
            ("library child again (all cached), wall", "library again", None),
            ("`gristmill run` again (all cached), wall", "rerun", rerun_wall / relib_wall),
            ("the same, GRISTMILL_WARM=0 (no warm runner), wall", "rerun local",
             best["rerun local"] / relib_wall),
        ]  # fmt: skip
        print(f"\n{args.files} files ({args.copies} copies of {args.input.name}), "
              f"{args.workers} workers, "
              f"fastest of {args.repeat} rounds, "
              f"{platform.python_version()}, {datetime.date.today()}, "
              f"load average {os.getloadavg()[0]:.1f}\n")  # fmt: skip
        print("| what | seconds | ratio | CPU s: own / server |\n|---|---|---|---|")
        for name, key, ratio in rows:
            shown = "" if ratio is None else f"{ratio:.3f}"
            print(f"| {name} | {best[key]:.1f} | {shown} | {cpu[key]} |")
        if ephemeral_wall is not None:
            print(f"| `gristmill run` with Prefect's temporary API, wall | {ephemeral_wall:.1f} "
                  f"| {ephemeral_wall / lib_wall:.3f} | |")  # fmt: skip
        print(
            "\nratios: flow / library, run / library child, cached re-run / cached library "
            "child, temporary-API run / library child; CPU of the wall rows is the whole "
            "child's (imports included)"
        )
    finally:
        stop_server(served)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
