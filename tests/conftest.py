"""Shared test set-up: offline, quiet, one Prefect test server for the whole session."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Before anything imports Prefect or Hugging Face libraries.
_PREFECT_HOME = tempfile.mkdtemp(prefix="gristmill-prefect-")
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": _PREFECT_HOME,
        # Never a developer's own gristmill server (~/.gristmill): tests start their own.
        "GRISTMILL_HOME": os.path.join(_PREFECT_HOME, "gristmill-home"),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": os.path.join(_PREFECT_HOME, "results"),
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
        "GRISTMILL_LOCK_TIMEOUT": "2",
        # One OpenMP thread for torch and BLAS, here and in every child process: the suite's
        # models and matrices are tiny, and on a busy 2-core box two threads spin-wait for each
        # other (measured: a Sinkhorn test 37 -> 7.5 s, an SFT test 24 -> 10 s).
        "OMP_NUM_THREADS": "1",
    }
)

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One temporary Prefect API for every test that runs a flow."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def copy_into(template: Path, tmp_path: Path) -> Path:
    """Copy what a module-scoped fixture built once (inputs and workspace) into a test's own
    tmp_path, same layout: much cheaper than ingesting again, and each test may change its copy."""
    shutil.copytree(template, tmp_path, dirs_exist_ok=True)
    return tmp_path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    """Write records as JSON lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


PROSE = (
    "The river turned the wheel of the old mill through the whole of the year, and the miller "
    "kept a careful record of the grain that came in from the farms along the valley. In spring "
    "the water was high and fast, so the stones ran from dawn until dusk; in late summer the "
    "flow fell away and the miller used those quiet weeks to dress the stones, mend the sluice "
    "and talk with the farmers about the harvest that was to come. Travellers who stopped at "
    "the mill remembered the smell of flour and the steady sound of the wheel."
)


def good_text(i: int) -> str:
    """A distinct document that passes the default quality rules."""
    return f"Record {i}. " + PROSE + f" This is note number {i} of the ledger."
