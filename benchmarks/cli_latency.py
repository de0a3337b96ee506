"""Fixed cost of a command: `gristmill select` (stored scores) and `materialize` vs the library.

Ingests a JSONL input (the IMDB test set from shared/data by default, 25,000 reviews) into a
scratch workspace and scores it once with `--selector` through the library, so that every
`select` below reuses the stored scores. Then, with one `gristmill server` this script starts
(the Prefect server on 127.0.0.1 and its warm runner, in a scratch GRISTMILL_HOME), it times
`--repeat` rounds of, one after another, each in a fresh interpreter:

* `gristmill select CORPUS --selector S --budget B --name sel-N` (the CLI, through its flow,
  run by the server's warm runner);
* the same with GRISTMILL_WARM=0 (the CLI imports Prefect and runs the flow itself: before);
* the same library call, `python -c 'from gristmill.pipeline import curate; curate(...)'`;
* `gristmill materialize sel-0 --out DIR`, warm and with GRISTMILL_WARM=0;
* the library call, `python -c 'from gristmill.pipeline import materialize; ...'`.

Each figure is the client's wall time, so every side includes interpreter start-up and imports,
beside CPU seconds (user + system; steadier than wall time on a loaded machine): the client's,
plus, for a warm command, the runner's child that ran it. The medians over the rounds count.
Prints a Markdown table of medians and ratios, then the same as JSON.

    python benchmarks/cli_latency.py --repeat 5

Run it from the checkout being measured: `python -m` and `python -c` put the working directory
ahead of PYTHONPATH, so the children import the gristmill found there.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from orchestration import DEFAULT_INPUT, ENV, start_server, stop_server, timed_command

CLI = [sys.executable, "-m", "gristmill.cli"]
GOALS = {"select": 3.0, "materialize": 5.0}  # seconds, on the 2-core machine
MAX_RATIO = 1.3


def prepare(source: Path, ws: Path, corpus: str, selector: str, budget: str) -> None:
    """Ingest `source` and score it once, so that each later select reuses the scores."""
    from gristmill import pipeline

    pipeline.ingest(ws, [str(source)], corpus, work_map=pipeline.ThreadMap())
    pipeline.curate(ws, corpus, selector, budget=budget, name="warm-up")


def _library_select(ws: Path, corpus: str, selector: str, budget: str, name: str) -> list[str]:
    script = (
        "import sys\nfrom gristmill.pipeline import curate\n"
        "curate(sys.argv[1], sys.argv[2], sys.argv[3], budget=sys.argv[4], name=sys.argv[5])\n"
    )
    return [sys.executable, "-c", script, str(ws), corpus, selector, budget, name]


def _library_materialize(ws: Path, selection: str, out: Path) -> list[str]:
    script = (
        "import sys\nfrom gristmill.pipeline import materialize\n"
        "materialize(sys.argv[1], sys.argv[2], sys.argv[3])\n"
    )
    return [sys.executable, "-c", script, str(ws), selection, str(out)]


def main() -> None:
    """Prepare the workspace, time every command `--repeat` times, print medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--selector", default="quality")
    parser.add_argument("--budget", default="50%")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the medians count")
    args = parser.parse_args()
    if not args.input.is_file():
        raise SystemExit(f"input not found: {args.input}")
    scratch = Path(tempfile.mkdtemp(prefix="gristmill-latency-"))
    served = None
    try:
        env = {**os.environ, **ENV, "PREFECT_HOME": str(scratch / "prefect-home"),
               "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL"}  # fmt: skip
        ws, corpus = scratch / "ws", "reviews"
        prepare(args.input, ws, corpus, args.selector, args.budget)
        served, state = start_server(scratch / "server-home", env)
        runner_pid = state["runner"].get("pid")
        local = {**served, "GRISTMILL_WARM": "0"}
        times: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}
        for round_ in range(args.repeat):
            select = [*CLI, "select", corpus, "--selector", args.selector, "--budget",
                      args.budget, "-w", str(ws), "--name"]  # fmt: skip
            materialize = [*CLI, "materialize", "warm-up", "-w", str(ws), "--out"]
            commands = {
                "select: gristmill": ([*select, f"cli-{round_}"], served),
                "select: gristmill, no runner": ([*select, f"local-{round_}"], local),
                "select: library": (_library_select(ws, corpus, args.selector, args.budget,
                                                    f"lib-{round_}"), served),
                "materialize: gristmill": ([*materialize, str(scratch / f"cli-{round_}")],
                                           served),
                "materialize: gristmill, no runner": (
                    [*materialize, str(scratch / f"local-{round_}")], local),
                "materialize: library": (_library_materialize(ws, "warm-up",
                                                              scratch / f"lib-{round_}"), served),
            }  # fmt: skip
            for name, (command, command_env) in commands.items():
                seconds, result = timed_command(command, command_env, runner_pid)
                times.setdefault(name, []).append(seconds)
                cpu.setdefault(name, []).append(result["child_cpu"])
                print(f"round {round_}: {name} {seconds:.2f} s, CPU {result['child_cpu']:.2f} s "
                      f"({result['warm_cpu']:.2f} in the runner)", flush=True)  # fmt: skip
        medians = {name: statistics.median(values) for name, values in times.items()}
        cpu_medians = {name: statistics.median(values) for name, values in cpu.items()}
        from gristmill.storage import Workspace, queries

        documents = queries.corpus_stats(Workspace(ws), corpus)["documents"]
        print(f"\n{documents:,} documents ({args.input.name}), selector {args.selector}, "
              f"budget {args.budget}, median of {args.repeat} rounds, gristmill server on "
              f"127.0.0.1, {platform.python_version()}, {datetime.date.today()}, "
              f"load average {os.getloadavg()[0]:.1f}\n")  # fmt: skip
        print("| command | wall s | ratio to library | CPU s (ratio) | goal |\n"
              "|---|---:|---:|---|---|")  # fmt: skip
        summary = {}
        for command, goal in GOALS.items():
            library, library_cpu = (
                medians[f"{command}: library"],
                cpu_medians[f"{command}: library"],
            )
            for who in ("gristmill", "gristmill, no runner", "library"):
                key = f"{command}: {who}"
                wall, used = medians[key], cpu_medians[key]
                ratio = wall / library
                met = "met" if ratio <= MAX_RATIO and wall < goal else "NOT met"
                shown = "" if who == "library" else f"<= {MAX_RATIO}x and < {goal:.0f} s: {met}"
                print(f"| {key} | {wall:.2f} | {ratio:.2f} | {used:.2f} ({used / library_cpu:.2f}) "
                      f"| {shown} |")  # fmt: skip
                summary[key] = {"wall_s": wall, "ratio": ratio, "cpu_s": used,
                                "cpu_ratio": used / library_cpu, "runs": times[key]}  # fmt: skip
        print("\n" + json.dumps({"documents": documents, "repeat": args.repeat, **summary}))
    finally:
        stop_server(served)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
