"""Wall time of each bad-input command, as a user runs it: one fresh `python -m gristmill.cli`
process per case (interpreter start, imports, the check, the one-line error).

The cases and their workspace are those of tests/test_fail_fast.py. `--pythonpath` runs another
checkout's CLI on the same cases (e.g. the code before fail-fast checks, for a before/after).

    python benchmarks/fail_fast.py [--repeat 3] [--pythonpath /path/to/other/checkout]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_fail_fast import build_cases  # noqa: E402  (the cases live with their test)


def time_case(args: list[str], pythonpath: Path, repeat: int) -> tuple[float, int, str]:
    """Median wall seconds of `repeat` runs, the exit code and the first line of stderr."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "COLUMNS": "80"}
    times, code, first = [], 0, ""
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "gristmill.cli", *args], env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
        times.append(time.perf_counter() - start)
        code = done.returncode
        first = (done.stderr.strip().splitlines() or [""])[0]
    return statistics.median(times), code, first


def main() -> None:
    """Build the cases' workspace, time every case and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (the median)")
    parser.add_argument("--pythonpath", type=Path, default=ROOT, help="checkout to run")
    parser.add_argument("--cases", nargs="*", help="only these cases (by name)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gristmill-fail-fast-") as tmp:
        cases = build_cases(Path(tmp))
        print(f"{'case':42} {'exit':>4} {'seconds':>8}  message")
        worst = 0.0
        for name, args, _expected in cases:
            if options.cases and name not in options.cases:
                continue
            seconds, code, first = time_case(args, options.pythonpath, options.repeat)
            worst = max(worst, seconds)
            print(f"{name:42} {code:>4} {seconds:>8.2f}  {first[:70]}", flush=True)
        print(f"slowest: {worst:.2f} s (median of {options.repeat} runs each, {os.cpu_count()} "
              f"CPUs, load {os.getloadavg()[0]:.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
