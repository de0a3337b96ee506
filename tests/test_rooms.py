"""Smaller rooms: the readers package stays split by format, and the device and atomic-JSON
conventions each live in exactly one place."""

from __future__ import annotations

import ast
import json
import threading
from pathlib import Path

import pytest

import gristmill
from gristmill.devices import resolve_device
from gristmill.errors import InputError
from gristmill.selectors.nudge import NudgeConfig
from gristmill.storage import readers
from gristmill.storage.files import write_json_atomic
from gristmill.training.config import TrainConfig

PACKAGE = Path(gristmill.__file__).parent
READERS_DIR = PACKAGE / "storage" / "readers"


def _definitions(name: str) -> list[str]:
    """Every module of gristmill/ defining a function `name` (at any depth)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
                found.append(str(path.relative_to(PACKAGE)))
    return found


def test_no_reader_module_is_over_400_lines() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in READERS_DIR.glob("*.py")}
    assert len(sizes) > 5  # one module per format, not one module
    assert {name: n for name, n in sizes.items() if n > 400} == {}


def test_every_format_has_one_reader() -> None:
    assert set(readers.READERS) == set(readers.FORMATS)


@pytest.mark.parametrize("name", ["resolve_device", "write_json_atomic"])
def test_one_definition(name: str) -> None:
    assert len(_definitions(name)) == 1, _definitions(name)


def test_no_other_device_helper() -> None:
    for old in ("default_device", "_device"):
        assert _definitions(old) == []


def test_write_json_atomic_leaves_only_the_file(tmp_path: Path) -> None:
    path = tmp_path / "out" / "metrics.json"
    write_json_atomic(path, {"b": 1, "a": [1.5, None]}, sort_keys=True)
    write_json_atomic(path, {"b": 2})
    assert json.loads(path.read_text(encoding="utf-8")) == {"b": 2}
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_a_failed_json_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"run": 1})
    with pytest.raises(ValueError, match="Circular"):
        cycle: list = []
        cycle.append(cycle)
        write_json_atomic(path, cycle)
    assert json.loads(path.read_text(encoding="utf-8")) == {"run": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_reader_never_sees_a_partial_json_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    big = {"rows": [{"i": i, "text": "x" * 200} for i in range(2000)]}  # ~400 KB per write
    write_json_atomic(path, big)
    stop = threading.Event()
    seen: list[int] = []
    errors: list[Exception] = []

    def read() -> None:
        while not stop.is_set():
            try:
                seen.append(len(json.loads(path.read_text(encoding="utf-8"))["rows"]))
            except Exception as error:  # a partial file would fail to parse
                errors.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(40):
            write_json_atomic(path, big)
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert seen and set(seen) == {2000}


def test_unknown_device_is_an_input_error_naming_it() -> None:
    with pytest.raises(InputError, match="'gpu'"):
        resolve_device("gpu")


def test_auto_and_none_resolve_alike() -> None:
    assert resolve_device(None) == resolve_device("auto") == resolve_device()
    assert resolve_device("cpu") == "cpu"


def test_cuda_beyond_the_machine_is_an_input_error() -> None:
    with pytest.raises(InputError, match="'cuda:99'"):
        resolve_device("cuda:99")


def test_device_fields_check_the_name_and_keep_it_as_written() -> None:
    # Stored signals are keyed by the config as written: None stays None, "auto" stays "auto".
    assert NudgeConfig().model_dump()["device"] is None
    assert TrainConfig().model_dump()["device"] == "auto"
    assert TrainConfig(device="cuda:1").device == "cuda:1"
    with pytest.raises(ValueError, match="'gpu'"):
        TrainConfig(device="gpu")
    with pytest.raises(ValueError, match="'tpu'"):
        NudgeConfig(device="tpu")
