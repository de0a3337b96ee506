"""Guards found in review: exports never destroy anything but an earlier export; ingest never
mixes sources or chunk plans; selections never chain across corpora."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import copy_into, good_text, write_jsonl
from typer.testing import CliRunner

from gristmill.cli import app
from gristmill.errors import InputError
from gristmill.storage.readers import IngestOptions, expand_inputs

pytestmark = pytest.mark.usefixtures("prefect_server")


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Path:
    """raw/pool.jsonl and a workspace ws with corpus `pool` and a selection `all` of it."""
    root = tmp_path_factory.mktemp("safety")
    path = write_jsonl(root / "raw" / "pool.jsonl", [{"text": good_text(i)} for i in range(8)])
    ws_dir = root / "ws"
    assert run("ingest", str(path), "--corpus", "pool", "-w", str(ws_dir))[0] == 0
    code, out = run("select", "pool", "--selector", "quality", "--name", "all", "-w", str(ws_dir))
    assert code == 0, out
    return root


@pytest.fixture
def ws(built: Path, tmp_path: Path) -> Path:
    """A workspace with corpus `pool` and a selection `all` of it (the test's own copy)."""
    return copy_into(built, tmp_path) / "ws"


def test_overwrite_replaces_only_an_earlier_export(ws: Path, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    code, out = run("materialize", "all", "--out", str(precious), "--overwrite", "-w", str(ws))
    assert code == 2 and "not an earlier gristmill export" in out
    assert (precious / "thesis.tex").read_text() == "years of work"

    export = tmp_path / "export"
    assert run("materialize", "all", "--out", str(export), "-w", str(ws))[0] == 0
    assert run("materialize", "all", "--out", str(export), "--overwrite", "-w", str(ws))[0] == 0
    assert (export / "data.parquet").exists()


@pytest.mark.parametrize("where", ["workspace", "parent", "corpora"])
def test_export_never_touches_the_workspace(ws: Path, where: str) -> None:
    target = {"workspace": ws, "parent": ws.parent, "corpora": ws / "corpora" / "x"}[where]
    code, out = run("materialize", "all", "--out", str(target), "--overwrite", "-w", str(ws))
    assert code == 2 and "refusing" in out
    assert (ws / "catalog.duckdb").exists()


def test_export_to_a_file_is_a_clear_error(ws: Path, tmp_path: Path) -> None:
    file = tmp_path / "file.txt"
    file.write_text("x")
    code, out = run("materialize", "all", "--out", str(file), "-w", str(ws))
    assert code == 2 and "not a directory" in out


def test_two_inputs_with_one_source_key_are_refused(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a" / "data.jsonl", [{"text": "x"}])
    b = write_jsonl(tmp_path / "b" / "data.jsonl", [{"text": "y"}])
    with pytest.raises(InputError, match=r"both be source 'data\.jsonl'"):
        expand_inputs([str(a), str(b)], IngestOptions())
    code, out = run("ingest", str(a), str(b), "--corpus", "c", "-w", str(tmp_path / "ws"))
    assert code == 2 and "data.jsonl" in out


def test_changed_chunk_size_is_refused_not_duplicated(ws: Path, tmp_path: Path) -> None:
    path = tmp_path / "raw" / "pool.jsonl"
    code, out = run("ingest", str(path), "--corpus", "pool", "--chunk-mb", "0.001", "-w", str(ws))
    assert code == 2 and "chunk size" in out
    stats = json.loads(run("stats", "pool", "-w", str(ws), "--json")[1])
    assert stats["documents"] == 8


def test_all_rejected_input_is_refused_and_leaves_no_corpus(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "raw.jsonl", [{"body": "no text field"}] * 3)
    code, out = run("ingest", str(path), "--corpus", "none", "-w", str(tmp_path / "ws"), "--json")
    assert code == 2 and "body" in out, out
    listed = run("corpora", "-w", str(tmp_path / "ws"), "--json")[1]
    assert "none" not in listed  # no workspace at all, or one without the corpus


def test_input_selection_must_share_the_corpus(ws: Path, tmp_path: Path) -> None:
    other = write_jsonl(tmp_path / "other.jsonl", [{"text": good_text(i)} for i in range(3)])
    assert run("ingest", str(other), "--corpus", "other", "-w", str(ws))[0] == 0
    code, out = run("select", "other", "--selector", "quality", "--name", "x", "--input", "all",
                    "-w", str(ws))  # fmt: skip
    assert code == 2 and "is from corpus 'pool'" in out


def test_bad_domain_weight_is_an_input_error(ws: Path) -> None:
    code, out = run("select", "pool", "--selector", "quality", "--name", "w",
                    "--domain-weight", "pool=lots", "-w", str(ws))  # fmt: skip
    assert code == 2 and "--domain-weight" in out


def test_a_directory_that_is_not_a_workspace_is_never_written(tmp_path: Path) -> None:
    from gristmill.storage import Workspace

    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("keep me")
    raw = write_jsonl(tmp_path / "raw.jsonl", [{"text": good_text(i)} for i in range(3)])
    code, out = run("ingest", str(raw), "--corpus", "c", "-w", str(home))
    assert code == 2 and "not a gristmill workspace" in out and str(home) in out
    assert sorted(p.name for p in home.iterdir()) == ["notes.txt"]  # not even a lock file
    with pytest.raises(InputError, match="not a gristmill workspace"):
        Workspace("/").check_writable()
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(InputError, match="not a directory"), Workspace(file).write_lock("x"):
        pass


def test_a_recipe_workspace_that_is_not_a_workspace_is_refused(tmp_path: Path, monkeypatch) -> None:
    import gristmill.flows.serve

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("serve started on a directory that is not a workspace")

    monkeypatch.setattr(gristmill.flows.serve, "serve_recipe", never)
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("keep me")
    write_jsonl(tmp_path / "data.jsonl", [{"text": good_text(i)} for i in range(3)])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: r\nworkspace: home\ningest:\n  - {corpus: c, paths: [data.jsonl]}\n"
        "select:\n  - {name: all, selector: quality}\n"
    )
    for args in (["run"], ["serve", "--interval", "60"]):
        code, out = run(*args, str(recipe))
        assert code == 2 and "not a gristmill workspace" in out, (args, out)
    assert sorted(p.name for p in home.iterdir()) == ["notes.txt"]


def test_new_empty_and_existing_workspaces_are_fine(ws: Path, tmp_path: Path) -> None:
    from gristmill.storage import Workspace

    empty = tmp_path / "empty"
    empty.mkdir()
    for root in (tmp_path / "new" / "ws", empty, ws):
        with Workspace(root).write_lock("x"):
            pass
    # A workspace is known by its marker too: its catalog may be lost while its files are not.
    assert sorted(p.name for p in empty.iterdir()) == [".gristmill-workspace", ".lock"]
    (empty / "corpora").mkdir()
    with Workspace(empty).write_lock("again"):
        pass
    # An older gristmill's failed first command left only the lock file.
    old = tmp_path / "old"
    old.mkdir()
    (old / ".lock").touch()
    with Workspace(old).write_lock("again"):
        pass


@pytest.mark.parametrize("name", ["shards", "pool__rejects", "selection"])
def test_ingest_refuses_a_corpus_named_like_a_view_or_table(tmp_path: Path, name: str) -> None:
    raw = write_jsonl(tmp_path / "raw.jsonl", [{"text": good_text(0)}])
    code, out = run("ingest", str(raw), "--corpus", name, "-w", str(tmp_path / "ws"))
    assert code == 2 and f"corpus name {name!r}" in out
