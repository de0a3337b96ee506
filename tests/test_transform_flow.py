"""Transforms as a step kind: the `transform` command and `transform:` recipe steps run the
library step through the flows (a Prefect task per group of shards), and recipes chain them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import good_text, write_jsonl
from typer.testing import CliRunner

from gristmill import pipeline
from gristmill.cli import app
from gristmill.errors import InputError
from gristmill.recipe import load_recipe

RUNNER = CliRunner()


def _pool(tmp_path: Path) -> tuple[Path, Path]:
    """Raw records with e-mail addresses and junk lines, and a workspace path. (All are one
    domain's pages alike but for digits, so `lines` would drop them all as site boilerplate:
    the tests turn that rule off.)"""
    records = [
        {"text": f"{good_text(i)}\nMail jo{i}@example.com for more.\nclick here", "site": "a.org"}
        for i in range(40)
    ]
    return write_jsonl(tmp_path / "raw.jsonl", records), tmp_path / "ws"


def invoke(*args: str) -> str:
    result = RUNNER.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.usefixtures("prefect_server")
def test_transform_command_rewrites_then_reuses_and_inspect_shows_before_after(
    tmp_path: Path,
) -> None:
    raw, ws = _pool(tmp_path)
    pipeline.ingest(ws, [str(raw)], "pool")
    command = ("transform", "pool", "--with", "pii,lines", "--name", "clean",
               "--param", "lines.min_words=3", "--param", "lines.repeated_min_pages=null",
               "-w", str(ws), "--json", "-q")  # fmt: skip
    first = json.loads(invoke(*command))
    assert first["documents"] == 40 and first["changes"]["pii"] == {"email": 40}
    assert first["changes"]["lines"]["removed_lines"] == 40  # every "click here"
    again = json.loads(invoke(*command))
    assert again["shards_done"] == 0 and again["shards_reused"] == first["shards_done"]
    shown = invoke("inspect", "clean", "-w", str(ws))
    assert "made from pool by pii, lines" in shown and "<EMAIL>" in shown


@pytest.mark.usefixtures("prefect_server")
def test_a_recipe_transforms_after_ingest_and_selects_from_the_derived_corpus(
    tmp_path: Path,
) -> None:
    raw, ws = _pool(tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"name: web\nworkspace: {ws}\n"
        f"ingest:\n  - {{corpus: pool, paths: [{raw}]}}\n"
        "transform:\n  - {name: masked, with: [pii]}\n"
        "  - {name: clean, with: [{lines: {min_words: 3, repeated_min_pages: null}}]}\n"
        "select:\n  - {name: kept, selector: quality}\n",
        encoding="utf-8",
    )
    loaded = load_recipe(recipe)
    assert [(t.corpus, t.name) for t in loaded.transform] == [("pool", "masked"),
                                                              ("masked", "clean")]  # fmt: skip
    assert loaded.select[0].corpus == "clean"  # the last transform's output
    said = invoke("run", str(recipe), "-q")
    assert "transform pool -> masked: 40 of 40" in said and "transform masked -> clean" in said
    record = pipeline.inspect_selection(pipeline.ingestion.as_workspace(ws), "kept")["selection"]
    assert record["corpus"] == "clean"
    chain = pipeline.transform_examples(ws, "clean", 1)["corpus"]
    assert chain["parent"] == "masked"


def test_recipe_transform_steps_are_checked_when_loaded(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    for body, message in [
        ("transform:\n  - {name: pool, with: [pii]}\n", "already used"),
        ("transform:\n  - {name: t, with: [tidy]}\n", "tidy"),
        ("transform:\n  - {name: t, with: [{lines: {min_wrds: 2}}]}\n", "min_wrds"),
    ]:
        recipe.write_text(f"ingest:\n  - {{corpus: pool, paths: [x.jsonl]}}\n{body}")
        with pytest.raises(InputError, match=message):
            load_recipe(recipe)


def test_the_web_example_recipe_checks_against_the_shared_warcs(
    shared_data: Path, tmp_path: Path
) -> None:
    from gristmill.pipeline import checks

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "examples" / "web.yaml")
    assert [step.selector for step in recipe.select] == ["language", "quality", "dedup"]
    assert recipe.select[0].corpus == "crawl-clean"
    checks.check_recipe(recipe, tmp_path / "ws")  # inputs exist and read as WARC
