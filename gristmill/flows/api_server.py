"""Prefect's temporary API server dies with the process that started it, however that ends.

Without PREFECT_API_URL, Prefect starts a temporary API server (uvicorn, about 200 MB) in a
child process and stops it at exit; a process killed with SIGKILL never gets there, and the
server listened on until someone killed it. Here the server runs under a watchdog thread that
stops it once its parent is gone (it is re-parented then). A watchdog rather than Linux's
prctl(PR_SET_PDEATHSIG), which fires when the *thread* that started the child ends: Prefect
starts the server from whichever thread first needs the API.

With an API configured (PREFECT_API_URL: the gristmill server the CLI finds, or any other),
Prefect starts no temporary server and the patched method never runs. The gristmill server
(`gristmill.server`) is `prefect server start` in a session of its own, not a temporary server:
nothing here watches or stops it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import prefect
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import get_current_settings

# Run as `python -c WATCHED_UVICORN <parent pid> <uvicorn arguments>`: uvicorn, plus a thread
# that sends the server SIGTERM (a clean shutdown) when the parent is gone, then SIGKILL.
WATCHED_UVICORN = """
import os, signal, sys, threading, time

parent = int(sys.argv.pop(1))

def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
    os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))

threading.Thread(target=watch, daemon=True).start()
sys.argv[0] = "uvicorn"
from uvicorn.main import main
main()
"""


def _run_watched_uvicorn(self: SubprocessASGIServer) -> subprocess.Popen[Any]:
    # Prefect 3.8.8's SubprocessASGIServer._run_uvicorn_command, run under the watchdog.
    server_env = {
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    return subprocess.Popen(
        args=[
            sys.executable, "-c", WATCHED_UVICORN, str(os.getpid()),
            "--app-dir", str(prefect.__module_path__.parent),
            "--factory", "prefect.server.api.server:create_app",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--log-level", "error",
            "--lifespan", "on",
        ],
        env={
            **os.environ,
            **server_env,
            **get_current_settings().to_environment_variables(exclude_unset=True),
        },
    )  # fmt: skip


def tie_temporary_server_to_this_process() -> None:
    """Start every temporary Prefect API server of this process under the watchdog."""
    SubprocessASGIServer._run_uvicorn_command = _run_watched_uvicorn  # type: ignore[method-assign]
