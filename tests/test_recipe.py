"""Recipes: validation names the bad key; `gristmill run` chains ingest, steps, materialize."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import good_text, write_jsonl
from typer.testing import CliRunner

from gristmill.cli import app
from gristmill.errors import InputError
from gristmill.recipe import load_recipe

RECIPE = """
name: test
ingest:
  - corpus: pool
    paths: [data/]
    domain_field: site
select:
  - name: clean
    selector: quality
  - name: top
    selector: quality
    mode: topk
    budget: 10docs
materialize:
  - selection: top
    out: out
    format: jsonl
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_chain_defaults_and_paths(tmp_path: Path) -> None:
    recipe = load_recipe(_write(tmp_path, RECIPE))
    assert recipe.select[0].corpus == "pool" and recipe.select[0].input is None
    assert recipe.select[1].input == "clean"  # each step sees what the previous one kept
    assert recipe.ingest[0].paths == [str(tmp_path / "data")]
    assert recipe.materialize[0].out == str(tmp_path / "out")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("    selector: quality\n  - name: top", "    selektor: quality\n  - name: top"),
            "select.0",
        ),
        (("budget: 10docs", "budget: plenty"), "select.1.budget"),
        (("selector: quality\n  - name", "selector: nope\n  - name"), "unknown selector 'nope'"),
        (("mode: topk", "mode: best"), "select.1.mode"),
        (("format: jsonl", "format: xml"), "materialize.0.format"),
        (("domain_field: site", "domain_feld: site"), "ingest.0.domain_feld"),
        (("name: test", "name: test\nextra: 1"), "extra"),
        (
            (
                "    selector: quality\n    mode",
                "    selector: quality\n    params: {min_wrds: 1}\n    mode",
            ),
            "min_wrds",
        ),
    ],
)
def test_validation_errors_name_the_key(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    text = RECIPE.replace(*change)
    assert text != RECIPE
    with pytest.raises(InputError) as caught:
        load_recipe(_write(tmp_path, text))
    assert message in str(caught.value) and "recipe.yaml" in str(caught.value)


@pytest.mark.parametrize("name", ["selections", "pool__rejects", "Selection"])
def test_corpus_named_like_a_sql_view_or_table_is_refused(tmp_path: Path, name: str) -> None:
    text = RECIPE.replace("corpus: pool", f"corpus: {name}")
    with pytest.raises(InputError, match=rf"ingest\.0\.corpus.*corpus name '{name}'"):
        load_recipe(_write(tmp_path, text))


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read recipe"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="not valid YAML"):
        load_recipe(_write(tmp_path, "select: [unclosed"))
    with pytest.raises(InputError, match="mapping"):
        load_recipe(_write(tmp_path, "- just a list"))


@pytest.mark.usefixtures("prefect_server")
def test_run_recipe_end_to_end(tmp_path: Path) -> None:
    records = [{"text": good_text(i), "site": "a" if i < 15 else "b"} for i in range(30)]
    records += [{"text": "tiny", "site": "junk"}] * 5
    write_jsonl(tmp_path / "data" / "part.jsonl", records)
    recipe = _write(tmp_path, RECIPE)
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(recipe), "-w", str(tmp_path / "ws"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    clean, top = (s["selection"] for s in summary["select"])
    assert (clean["n_candidates"], clean["n_selected"]) == (35, 30)
    assert (top["parent"], top["n_candidates"], top["n_selected"]) == ("clean", 30, 10)
    lines = (tmp_path / "out" / "data.jsonl").read_text().splitlines()
    assert len(lines) == 10
    # Running again reuses every stored score and gives the same selection.
    again = runner.invoke(app, ["run", str(recipe), "-w", str(tmp_path / "ws"), "--json"])
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    assert all(s["shards_scored"] == 0 for s in second["select"])
    assert (tmp_path / "out" / "data.jsonl").read_text().splitlines() == lines


@pytest.mark.usefixtures("prefect_server")
def test_quickstart_runs_offline(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["quickstart", "-w", str(tmp_path / "ws"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    stats = summary["ingest"][0]["stats"]
    assert stats["reconciles"] and stats["rejected"] == 3 and stats["documents"] > 100
    clean = summary["select"][0]["selection"]
    per_domain = {d["domain"]: d for d in clean["summary"]["domains"]}
    assert per_domain["web-junk"]["kept"] == 0  # every planted junk document is dropped
    assert per_domain["python-docs"]["kept"] > 0
    assert summary["out"][0]["documents"] > 0
