"""Bad input is refused before Prefect is imported: every case exits 2 with one line.

All cases run in one subprocess (this file run as a script), each through the CLI's typer app;
after each one the runner records whether Prefect or torch was imported. The workspace the cases
use is built with the library pipeline, so no flow runs anywhere in this file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _records(n: int) -> str:
    prose = "The river turned the wheel of the old mill through the whole of the year, and the "
    return "".join(
        json.dumps({"text": f"Record {i}. {prose * 4}", "site": "https://a.example/"}) + "\n"
        for i in range(n)
    )


def build_cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    """A workspace with corpus `pool`, selection `clean` and an export of it, and the bad
    commands against it: (case, CLI arguments, text the one-line error must contain)."""
    from gristmill import pipeline

    raw = tmp / "raw.jsonl"
    raw.write_text(_records(30), encoding="utf-8")
    ws = tmp / "ws"
    pipeline.ingest(ws, [str(raw)], "pool")
    pipeline.curate(ws, "pool", "quality", name="clean")
    export = tmp / "export"
    pipeline.materialize(ws, "clean", str(export))
    full = tmp / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    odd = tmp / "data.xyz"
    odd.write_text("hi")
    recipe = tmp / "recipe.yaml"
    recipe.write_text(
        "select:\n  - {name: a, selector: quality, corpus: nowhere}\n", encoding="utf-8"
    )
    misspelt = tmp / "misspelt.yaml"
    misspelt.write_text(
        "select:\n  - {name: a, selector: qualty, corpus: pool}\n", encoding="utf-8"
    )
    out_of_recipe = tmp / "unmade.yaml"
    out_of_recipe.write_text(
        f"materialize:\n  - {{selection: gone, out: {tmp / 'o'}}}\n", encoding="utf-8"
    )
    w = ["-w", str(ws)]
    select = ["select", "pool", "--name", "new", *w]
    return [
        ("misspelt selector", [*select, "--selector", "qualty"], "unknown selector 'qualty'"),
        ("unknown corpus", ["select", "nope", "--selector", "quality", "--name", "x", *w],
         "no corpus named 'nope'"),
        ("unknown target", [*select, "--selector", "quality", "--target", "nope"],
         "no corpus named 'nope'"),
        ("unknown input selection", [*select, "--selector", "quality", "--input", "nope"],
         "no selection named 'nope'"),
        ("bad budget", [*select, "--selector", "quality", "--budget", "lots"], "invalid budget"),
        ("bad mode", [*select, "--selector", "quality", "--mode", "best"], "mode"),
        ("bad --param key", [*select, "--selector", "quality", "--param", "min_wrds=3"],
         "min_wrds"),
        ("bad --param form", [*select, "--selector", "quality", "--param", "oops"],
         "'oops' is not key=value"),
        ("bad selection name", ["select", "pool", "--selector", "quality", "--name", "../up", *w],
         "invalid selection name"),
        ("existing selection", ["select", "pool", "--selector", "quality", "--name", "clean", *w],
         "--replace"),
        ("bad runner", [*select, "--selector", "quality", "--runner", "bogus"],
         "unknown runner"),
        ("score unknown corpus", ["score", "nope", "--selector", "quality", *w],
         "no corpus named 'nope'"),
        ("missing input path", ["ingest", str(tmp / "missing.jsonl"), "--corpus", "c", *w],
         "no such file or directory"),
        ("unknown format", ["ingest", str(odd), "--corpus", "c", *w], "unknown format"),
        ("bad ingest option", ["ingest", str(raw), "--corpus", "c", "--txt-unit", "page", *w],
         "--txt-unit: Input should be"),
        ("every record rejected", ["ingest", str(raw), "--corpus", "c", "--text-field", "body",
                                   *w], "the records have the fields text, site"),
        ("materialize into a non-empty dir", ["materialize", "clean", "--out", str(full), *w],
         "not an earlier gristmill export"),
        ("materialize over an export", ["materialize", "clean", "--out", str(export), *w],
         "pass --overwrite to replace it"),
        ("materialize unknown selection", ["materialize", "nope", "--out", str(tmp / "n"), *w],
         "no selection named 'nope'"),
        ("unknown transform", ["transform", "pool", "--with", "pii,tidy", "--name", "t", *w],
         "tidy"),
        ("bad transform setting", ["transform", "pool", "--with", "lines", "--name", "t",
                                   "--param", "lines.min_wrds=2", *w], "min_wrds"),
        ("transform onto its parent", ["transform", "pool", "--with", "pii", "--name", "pool",
                                       *w], "needs a new name"),
        ("transform of an unknown corpus", ["transform", "nope", "--with", "pii", "--name", "t",
                                            *w], "no corpus named 'nope'"),
        ("recipe step on an unknown corpus", ["run", str(recipe), *w],
         "select[0].corpus: no corpus named 'nowhere'"),
        ("recipe step with a misspelt selector", ["run", str(misspelt), *w],
         "unknown selector 'qualty'"),
        ("recipe materializes an unknown selection", ["run", str(out_of_recipe), *w],
         "materialize[0].selection: no selection named 'gone'"),
    ]  # fmt: skip


def run_cases(tmp: Path, only: list[str] | None = None) -> list[dict]:
    """Run each case through the CLI in this interpreter: its exit code, its stderr, and
    whether Prefect or torch had been imported by then."""
    import contextlib
    import io

    from gristmill.cli import app

    results = []
    for name, args, expected in build_cases(tmp):
        if only and name not in only:
            continue
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            try:
                code = app(args, standalone_mode=False)
            except SystemExit as error:  # typer's usage errors
                code = error.code
            except Exception as error:  # click's usage errors without standalone mode
                code = getattr(error, "exit_code", 1)
                stderr.write(str(error))
        results.append({
            "case": name, "code": code, "stderr": stderr.getvalue(), "expected": expected,
            "prefect": "prefect" in sys.modules, "torch": "torch" in sys.modules,
        })  # fmt: skip
    return results


def test_every_bad_input_exits_2_before_prefect_is_imported(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "COLUMNS": "80"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, __file__, str(tmp_path)], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert len(results) == 26  # every case ran
    for result in results:
        where = f"{result['case']}: {result['stderr']!r}"
        assert result["code"] == 2, where
        assert result["expected"] in result["stderr"], where
        assert result["stderr"].startswith("error: "), where
        # one message: the error line, with no traceback, usage box or note after it
        assert len(result["stderr"].strip().splitlines()) == 1, where
        assert not result["prefect"], f"{result['case']} imported Prefect"
        assert not result["torch"], f"{result['case']} imported torch"
    # Nothing printed at interpreter exit either (DuckDB's nanobind leak report).
    assert "nanobind" not in done.stderr and "leaked" not in done.stderr, done.stderr


if __name__ == "__main__":
    print(json.dumps(run_cases(Path(sys.argv[1]), sys.argv[2:] or None)))
