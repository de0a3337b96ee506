"""Ingest throughput of gristmill vs `datasets.load_dataset("json")` on the same JSONL file.

Builds a large JSONL file in a scratch directory by repeating an input (the IMDB test set from
shared/data by default), then measures, each in its own fresh subprocess and one after another:

* gristmill-flow: `gristmill.flows.ingest_flow(...)`, the Prefect flow users run, with the
  flow's default thread-pool task runner;
* gristmill-library: `gristmill.pipeline.ingest(...)`, the same step the flow runs, with a
  `ThreadMap` of `os.cpu_count()` workers (no Prefect), so Prefect's overhead shows;
* datasets: `datasets.load_dataset("json", data_files=path, split="train", cache_dir=...)` as
  its docs show it (default num_proc, fresh cache directory).

Throughput is input MB (MiB, 2**20 bytes) over the seconds of the ingest call inside the child
(interpreter start-up and imports excluded; the whole child's wall time is reported too). Peak
RSS is `ru_maxrss` of each child as returned by `os.wait4` (the per-child form of
`getrusage(RUSAGE_CHILDREN)`, which would otherwise keep the maximum over earlier children).
Every system runs at two file sizes to show whether peak memory grows with the input; with
`--repeat N` the fastest of N runs counts, and the peak RSS is the largest of them.

    python benchmarks/ingest.py --size-mb 1024
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any

MB = 1 << 20
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_INPUT = DATA_DIR / "imdb_test" / "imdb_test.jsonl"
SYSTEMS = ("gristmill-flow", "gristmill-library", "datasets")
CHILD_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
}


@dataclass
class Measurement:
    """One system's run on one file."""

    system: str
    file_bytes: int
    lines: int
    call_s: float
    process_s: float
    cpu_s: float
    peak_rss_mb: float
    self_peak_rss_mb: float
    records: int
    detail: str

    @property
    def mb_per_s(self) -> float:
        """Input MB per second of the ingest call."""
        return self.file_bytes / MB / self.call_s

    @property
    def check(self) -> str:
        """Whether every line of the file came out as a document, a reject or a row."""
        return "ok" if self.records == self.lines else f"MISMATCH ({self.records} != {self.lines})"


# -- children: each runs one system in its own process ------------------------------------------
def child_flow(path: str, work: Path) -> dict[str, Any]:
    """Ingest through the Prefect flow, as users run it."""
    from gristmill.flows import ingest_flow
    from gristmill.storage.readers import IngestOptions

    runner = ingest_flow.task_runner
    start = time.perf_counter()
    result = ingest_flow(str(work / "workspace"), [path], "bench", IngestOptions())
    seconds = time.perf_counter() - start
    added = result["added"]
    workers = getattr(runner, "_max_workers", "?")
    return {
        "seconds": seconds,
        "records": added["documents"] + added["rejected"],
        "detail": f"{added['documents']} documents + {added['rejected']} rejected, "
        f"{result['chunks']} chunks, {type(runner).__name__}(max_workers={workers})",
    }


def child_library(path: str, work: Path) -> dict[str, Any]:
    """Ingest through the library pipeline (no Prefect) on a pool of one thread per CPU."""
    from gristmill import pipeline
    from gristmill.storage.readers import IngestOptions

    workers = os.cpu_count() or 1
    start = time.perf_counter()
    report = pipeline.ingest(work / "workspace", [path], "bench", IngestOptions(),
                             work_map=pipeline.ThreadMap(workers))  # fmt: skip
    seconds = time.perf_counter() - start
    added = report.added
    return {
        "seconds": seconds,
        "records": added["documents"] + added["rejected"],
        "detail": f"{added['documents']} documents + {added['rejected']} rejected, "
        f"{report.chunks} chunks, ThreadMap(workers={workers})",
    }


def child_datasets(path: str, work: Path) -> dict[str, Any]:
    """Load the file with `datasets.load_dataset("json")` into a fresh cache directory."""
    import datasets

    datasets.disable_progress_bars()
    start = time.perf_counter()
    dataset = datasets.load_dataset(
        "json", data_files=path, split="train", cache_dir=str(work / "hf-cache")
    )
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "records": dataset.num_rows,
        "detail": f"{dataset.num_rows} rows, {len(dataset.cache_files)} cache files",
    }


CHILDREN = {
    "gristmill-flow": child_flow,
    "gristmill-library": child_library,
    "datasets": child_datasets,
}


def run_child(system: str, path: str, work: Path, result_file: Path) -> None:
    """Child entry point: run one system and write its result as JSON."""
    import resource

    result = CHILDREN[system](path, work)
    result["self_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result_file.write_text(json.dumps(result))


# -- parent ---------------------------------------------------------------------------------------
def build_input(source: Path, target_bytes: int, dest: Path) -> int:
    """Write `source` repeated (whole lines) up to about `target_bytes`; return the line count."""
    data = source.read_bytes()
    if not data.endswith(b"\n"):
        data += b"\n"
    per_copy = data.count(b"\n")
    written = lines = 0
    with open(dest, "wb") as handle:
        while written + len(data) <= target_bytes:
            handle.write(data)
            written += len(data)
            lines += per_copy
        tail = data[: data.rfind(b"\n", 0, target_bytes - written) + 1]
        handle.write(tail)
        lines += tail.count(b"\n")
    return lines


def measure(system: str, path: Path, lines: int, scratch: Path, keep: bool) -> Measurement:
    """Run one system on one file in a fresh subprocess and collect its time and peak RSS."""
    work = Path(tempfile.mkdtemp(prefix=f"{system}-", dir=scratch))
    result_file = work / "result.json"
    env = {**os.environ, **CHILD_ENV, "PREFECT_HOME": str(work / "prefect-home")}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", system]
    command += ["--input", str(path), "--scratch", str(work), "--report", str(result_file)]
    log = work / "child.log"
    start = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    process_s = time.perf_counter() - start
    if process.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:]
        sys.exit(f"{system} on {path} failed with exit code {process.returncode}:\n{tail}")
    result = json.loads(result_file.read_text())
    if not keep:
        shutil.rmtree(work)
    return Measurement(
        system=system,
        file_bytes=path.stat().st_size,
        lines=lines,
        call_s=result["seconds"],
        process_s=process_s,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,
        self_peak_rss_mb=result["self_peak_rss_mb"],
        records=result["records"],
        detail=result["detail"],
    )


def best_of(
    system: str, path: Path, lines: int, scratch: Path, args: argparse.Namespace
) -> Measurement:
    """The fastest of `args.repeat` runs, with the largest peak RSS of them."""
    runs = [measure(system, path, lines, scratch, args.keep) for _ in range(args.repeat)]
    best = min(runs, key=lambda m: m.call_s)
    return replace(
        best,
        peak_rss_mb=max(m.peak_rss_mb for m in runs),
        self_peak_rss_mb=max(m.self_peak_rss_mb for m in runs),
    )


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (other work on the machine skews timings)."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_facts() -> dict[str, str]:
    """CPU count and model, RAM, Python and library versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor() or "unknown",
    )
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("gristmill", "datasets", "pyarrow", "prefect")
    )
    return {
        "nproc": str(os.cpu_count()),
        "CPU": model,
        "RAM": f"{ram:.1f} GiB",
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "versions": versions,
    }


def find(results: list[Measurement], system: str, size: int) -> Measurement:
    """The measurement of a system on the file of a given size."""
    return next(m for m in results if m.system == system and m.file_bytes == size)


def render(
    results: list[Measurement], sizes: list[int], facts: dict[str, str], argv: str, repeat: int
) -> str:
    """The Markdown report."""
    big, small = max(sizes), min(sizes)
    lines = [
        '## Ingest throughput: gristmill vs `datasets.load_dataset("json")`',
        "",
        f"Date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}. Command: `{argv}`",
        "",
        *(f"- {key}: {value}" for key, value in facts.items()),
        "",
        "Input: the IMDB test set JSONL repeated (whole lines) to each size; MB = 2**20 bytes. "
        f"Each system runs in its own fresh subprocess, one after another, {repeat} time(s); "
        "the fastest run is shown, with the largest peak RSS of the runs. MB/s = input MB / "
        "seconds of the ingest call in the child (imports excluded; `process s` is the whole "
        "child, `CPU s` its user + system CPU time, imports included). Peak RSS = `ru_maxrss` "
        "of the child from `os.wait4` (includes the largest reaped grandchild, e.g. Prefect's "
        "server); `self` = the child process alone.",
        "",
        "| file MB | system | call s | process s | CPU s | MB/s | peak RSS MB | self RSS MB | "
        "check | detail |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for m in results:
        lines.append(
            f"| {m.file_bytes / MB:.0f} | {m.system} | {m.call_s:.1f} | {m.process_s:.1f} | "
            f"{m.cpu_s:.1f} | {m.mb_per_s:.1f} | {m.peak_rss_mb:.0f} | "
            f"{m.self_peak_rss_mb:.0f} | {m.check} | {m.detail} |"
        )
    flow, library, hf = (find(results, s, big) for s in SYSTEMS)
    ratio = flow.mb_per_s / hf.mb_per_s
    flow_small = find(results, "gristmill-flow", small)
    growth = flow.peak_rss_mb - flow_small.peak_rss_mb
    percent = growth / flow_small.peak_rss_mb * 100
    lines += [
        "",
        f"At {big / MB:.0f} MB:",
        "",
        f"- throughput ratio gristmill-flow / datasets: **{ratio:.2f}x** "
        f"(goal >= 2x: {'met' if ratio >= 2 else 'NOT met'}); "
        f"gristmill-library / datasets: {library.mb_per_s / hf.mb_per_s:.2f}x",
        f"- Prefect overhead: flow {flow.call_s:.1f} s - library {library.call_s:.1f} s = "
        f"{flow.call_s - library.call_s:.1f} s",
        f"- gristmill-flow peak RSS: {flow_small.peak_rss_mb:.0f} MB at {small / MB:.0f} MB "
        f"-> {flow.peak_rss_mb:.0f} MB at {big / MB:.0f} MB ({growth:+.0f} MB, {percent:+.0f}% "
        f"for {big / small:.0f}x the input; goal < 1024 MB: "
        f"{'met' if flow.peak_rss_mb < 1024 else 'NOT met'})",
        "",
    ]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="JSONL to repeat")
    parser.add_argument("--size-mb", type=int, default=1024, help="size of the big file")
    parser.add_argument(
        "--small-mb", type=int, help="second file size for the memory check (default size/4)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per system; fastest counts")
    parser.add_argument("--scratch", type=Path, help="directory for the files (default: /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the files and workspaces")
    parser.add_argument(
        "--report", type=Path, default=Path("/tmp/bench_ingest_result.md"), help="Markdown out"
    )
    # Internal: run one system on --input, working in --scratch, its result JSON to --report.
    parser.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    """Build the files, run every system on each, print and write the report."""
    args = parse_args()
    if args.child:
        run_child(args.child, str(args.input), args.scratch, args.report)
        return
    if not args.input.is_file():
        sys.exit(
            f"input {args.input} not found: the benchmark needs the shared data directory "
            f"({DATA_DIR}) or a JSONL file given with --input"
        )
    small_mb = args.small_mb or max(1, args.size_mb // 4)
    if args.scratch:
        args.scratch.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=args.scratch))
    argv = shlex.join([Path(sys.executable).name, *sys.argv])
    load_before = load_average()
    results: list[Measurement] = []
    sizes: list[int] = []
    try:
        for size_mb in (small_mb, args.size_mb):
            path = scratch / f"input-{size_mb}mb.jsonl"
            lines = build_input(args.input, size_mb * MB, path)
            sizes.append(path.stat().st_size)
            print(f"built {path} ({sizes[-1] / MB:.0f} MB, {lines} lines)", flush=True)
            for system in SYSTEMS:
                m = best_of(system, path, lines, scratch, args)
                results.append(m)
                print(
                    f"  {system}: {m.call_s:.1f} s, {m.mb_per_s:.1f} MB/s, peak RSS "
                    f"{m.peak_rss_mb:.0f} MB, check {m.check}: {m.detail}",
                    flush=True,
                )
            if not args.keep:
                path.unlink()
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    facts = machine_facts()
    facts["load average 1/5/15 min (before -> after)"] = f"{load_before} -> {load_average()}"
    report = render(results, sizes, facts, argv, args.repeat)
    print(report)
    args.report.write_text(report)
    print(f"report written to {args.report}" + (f"; files kept in {scratch}" if args.keep else ""))


if __name__ == "__main__":
    main()
