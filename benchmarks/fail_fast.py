"""Wall time of each bad-input command, as a user runs it: one fresh `python -m gristmill.cli`
process per case (interpreter start, imports, the check, the one-line error).

The cases and their workspace are those of tests/test_fail_fast.py. `--pythonpath` runs another
checkout's CLI on the same cases (e.g. the code before fail-fast checks, for a before/after).

    python benchmarks/fail_fast.py [--repeat 3] [--pythonpath /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_fail_fast import build_cases  # noqa: E402  (the cases live with their test)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_case(args: list[str], pythonpath: Path, repeat: int) -> tuple[float, float, int, int, str]:
    """Median wall and CPU seconds of `repeat` runs, the exit code, the lines on stderr and the
    first of them. CPU time says what a busy machine's wall time hides."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "COLUMNS": "80"}
    times, cpus, code, lines, first = [], [], 0, 0, ""
    for _ in range(repeat):
        start, cpu = time.perf_counter(), _children_cpu()
        done = subprocess.run([sys.executable, "-m", "gristmill.cli", *args], env=env,
                              capture_output=True, text=True, timeout=600,
                              cwd=pythonpath)  # fmt: skip
        times.append(time.perf_counter() - start)
        cpus.append(_children_cpu() - cpu)
        code = done.returncode
        printed = done.stderr.strip().splitlines()
        lines, first = len(printed), (printed or [""])[0]
    return statistics.median(times), statistics.median(cpus), code, lines, first


def main() -> None:
    """Build the cases' workspace, time every case and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (the median)")
    parser.add_argument("--pythonpath", type=Path, default=ROOT, help="checkout to run")
    parser.add_argument("--cases", nargs="*", help="only these cases (by name)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gristmill-fail-fast-") as tmp:
        cases = build_cases(Path(tmp))
        print(f"{'case':40} {'exit':>4} {'lines':>5} {'wall s':>6} {'cpu s':>5}  message")
        worst = 0.0
        for name, args, _expected in cases:
            if options.cases and name not in options.cases:
                continue
            seconds, cpu, code, lines, first = time_case(args, options.pythonpath, options.repeat)
            worst = max(worst, seconds)
            print(f"{name:40} {code:>4} {lines:>5} {seconds:>6.2f} {cpu:>5.2f}  {first[:50]}",
                  flush=True)  # fmt: skip
        print(f"slowest: {worst:.2f} s (median of {options.repeat} runs each, {os.cpu_count()} "
              f"CPUs, load {os.getloadavg()[0]:.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
