"""Prefect flows over the library: ingest, curate, materialize, experiments and whole recipes.

The flows are imported on first use (`from gristmill.flows import curate_flow` loads only
flows/tasks.py), so a command pays for the modules of its own flow: the experiment and zoo
flows pull in the training stack and SciPy, several seconds on a small machine.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any

# Each public name and the submodule that defines it.
_FLOWS = {
    "curate_flow": "tasks",
    "experiment_flow": "experiment",
    "ingest_flow": "tasks",
    "materialize_flow": "tasks",
    "run_recipe_flow": "run",
    "serve_recipe": "serve",
    "task_runner": "tasks",
    "transform_flow": "tasks",
    "zoo_build_flow": "zoo",
}
__all__ = sorted(_FLOWS)
# Prefect imports its server (about 3 s) only to start a temporary API server; the watchdog
# that ties that server to this process is installed right after that import, not before.
_PREFECT_SERVER = "prefect.server.api.server"


def __getattr__(name: str) -> Any:
    """A flow, imported from its submodule the first time it is asked for."""
    if name not in _FLOWS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_FLOWS[name]}"), name)


def _tie_temporary_server() -> None:
    from gristmill.flows.api_server import tie_temporary_server_to_this_process

    tie_temporary_server_to_this_process()


class _AfterPrefectServerImport(importlib.abc.MetaPathFinder):
    """Runs `_tie_temporary_server` once Prefect's server module has been executed."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        """The server module's own spec, its loader wrapped; None for every other module."""
        if fullname != _PREFECT_SERVER:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            original_exec(module)
            _tie_temporary_server()

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


# Whenever Prefect starts a temporary API server for these flows, it dies with this process.
if _PREFECT_SERVER in sys.modules:
    _tie_temporary_server()
elif not any(isinstance(finder, _AfterPrefectServerImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _AfterPrefectServerImport())
