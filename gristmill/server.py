"""A local Prefect server for gristmill: started in the background, found by every command.

`start` runs `python -m prefect server start --host 127.0.0.1 --port N` as a detached process
(its own session, output to a log file) and waits until `/api/health` answers; `stop` ends it
with SIGTERM (SIGKILL after a timeout); `status` and `running_api_url` read the state file. This
module imports nothing heavier than the standard library at import time: the CLI asks it for the
API URL before it imports Prefect.

Where the history lives: per user, in `$GRISTMILL_HOME/server/` (default `~/.gristmill/server/`),
not in a workspace. A Prefect server is one API on one port, and a person has one UI to watch:
runs of every workspace appear in it side by side, which is what the UI is for. Commands find
the server before they know which workspace they will use (the API URL must be settled before
Prefect is imported), and a workspace stays plain data that can be copied or deleted without
carrying another machine's run records or a database a live server holds open. The server's
files sit together in that directory: `prefect.db` (SQLite: flow runs, deployments, artifacts),
`server.pid`, `state.json` (port, URLs, pid, database, start time), `server.log`, and
`prefect-home/` (the server's PREFECT_HOME).

Prefect's own `prefect server start --background` is not used: it keeps the server's output in
pipes nobody reads (a server that logs enough blocks), records no port, and returns before the
API answers.

The server's settings come from here alone: the PREFECT_* variables of the shell that starts it
are dropped, so a profile or a PREFECT_API_URL meant for clients cannot redirect its database or
its UI.

Beside it, `start` launches the warm runner (`gristmill.runner`, unless GRISTMILL_WARM=0): one
process with Prefect and the flows imported, which runs the commands `gristmill.warm` hands it,
one forked child each. It keeps the starting shell's environment (PREFECT_* included: those are
the clients' settings) with the server's API; its pid is in `state.json`, its socket, state and
log are `runner.sock`, `runner.json` and `runner.log` here. `stop` ends it first; `start` on a
running server replaces a runner that is gone or older than gristmill's code.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gristmill.errors import GristmillError, InputError

HOST = "127.0.0.1"
# Our server processes, by pid, while this process is their parent (so a stop can reap them).
_children: dict[int, subprocess.Popen[bytes]] = {}


def server_dir() -> Path:
    """The per-user server directory: $GRISTMILL_HOME/server (default ~/.gristmill/server)."""
    root = os.environ.get("GRISTMILL_HOME") or str(Path.home() / ".gristmill")
    return Path(root).expanduser().resolve() / "server"


def _files() -> dict[str, Path]:
    root = server_dir()
    return {
        "state": root / "state.json",
        "pid": root / "server.pid",
        "log": root / "server.log",
        "database": root / "prefect.db",
        "prefect_home": root / "prefect-home",
        "start_lock": root / "start.lock",
        "runner_log": root / "runner.log",
    }


def _read_state() -> dict[str, Any] | None:
    try:
        state = json.loads(_files()["state"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("pid"), int) else None


def _read_pid() -> int | None:
    try:
        return int(_files()["pid"].read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, and not ours (see _is_our_server)
    with contextlib.suppress(OSError, IndexError):
        # A zombie answers signal 0 but serves nothing.
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")


def _is_our_server(pid: int, port: int | None) -> bool:
    """True when `pid` is alive and (where /proc tells) runs `prefect server start` on `port`."""
    if not _alive(pid):
        return False
    args = _cmdline(pid)
    if args is None:  # no /proc: a live pid is all there is to go on
        return True
    return args[1:5] == ["-m", "prefect", "server", "start"] and (port is None or str(port) in args)


def _clean_stale(pid: int | None) -> None:
    """Remove the state and pid files when they describe `pid` (a server that is gone)."""
    files = _files()
    state = _read_state()
    if state is None or state["pid"] == pid:
        files["state"].unlink(missing_ok=True)
    if _read_pid() in (pid, None):
        files["pid"].unlink(missing_ok=True)
    if pid is not None:
        _children.pop(pid, None)


def _port_open(port: int, timeout_s: float = 0.25) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def running_api_url() -> str | None:
    """The API URL of the running gristmill server, or None (fast: a file, a pid, a connect)."""
    state = _read_state()
    if state is None:
        return None
    if not _is_our_server(state["pid"], state.get("port")):
        _clean_stale(state["pid"])
        return None
    return state["api_url"] if _port_open(int(state["port"])) else None


def ui_url() -> str | None:
    """The UI URL of the running gristmill server, or None."""
    api = running_api_url()
    return api.removesuffix("/api") if api else None


def status() -> dict[str, Any]:
    """Where the server stands: running, starting or stopped, with its URLs, pid and files."""
    files = _files()
    report: dict[str, Any] = {
        "running": False,
        "starting": False,
        "home": str(server_dir()),
        "database": str(files["database"]),
        "log": str(files["log"]),
        "stale_cleaned": False,
    }
    state = _read_state()
    pid = state["pid"] if state else _read_pid()
    if pid is None:
        return report
    if not _is_our_server(pid, state.get("port") if state else None):
        _clean_stale(pid)
        report["stale_cleaned"] = True
        return report
    if state is None:  # the pid file comes first, the state a moment later
        return {**report, "starting": True, "pid": pid}
    # uvicorn listens once the app has started (database migrated): listening is answering.
    listening = _port_open(int(state["port"]))
    return {**report, **state, "running": listening, "starting": not listening,
            "runner": runner_status(state.get("runner_pid"))}  # fmt: skip


def _is_our_runner(pid: int | None) -> bool:
    """True when `pid` is alive and (where /proc tells) runs `gristmill.runner`."""
    if pid is None or not _alive(pid):
        return False
    args = _cmdline(pid)
    return args is None or args[1:3] == ["-m", "gristmill.runner"]


def runner_status(pid: int | None) -> dict[str, Any]:
    """The warm runner's state: off (GRISTMILL_WARM=0), absent, starting, ready or stale (the
    code or this Python differ from its own: commands run in their own process)."""
    from gristmill import warm

    if not warm.warm_enabled():
        return {"state": "off"}
    if not _is_our_runner(pid):
        return {"state": "absent", "log": str(_files()["runner_log"])}
    ready = warm.read_state()
    if ready is None or ready["pid"] != pid:
        return {"state": "starting", "pid": pid}
    # Not the variables read at import: those of `server status` are not a flow command's.
    same = {k: v for k, v in warm.identity().items() if k != "import_env"}
    fresh = same.items() <= ready["identity"].items() and ready["code_mtime"] == warm.code_mtime()
    return {"state": "ready" if fresh else "stale", "pid": pid, "socket": ready["socket"],
            "started_at": ready.get("started_at")}  # fmt: skip


def _db_holders(database: Path, ignore: set[int]) -> list[int]:
    """Pids of processes that hold the SQLite database (or its journal) open (Linux; else [])."""
    names = {str(database), f"{database}-wal", f"{database}-shm", f"{database}-journal"}
    holders = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        pid = int(fd_dir.parent.name)
        if pid in ignore:
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in names for fd in fd_dir.iterdir()):
                holders.append(pid)
    return holders


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _server_env(port: int) -> dict[str, str]:
    files = _files()
    url = f"http://{HOST}:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_HOME": str(files["prefect_home"]),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{files['database']}",
            "PREFECT_SERVER_API_HOST": HOST,
            "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_API_URL": f"{url}/api",
            "PREFECT_SERVER_UI_API_URL": f"{url}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
        }
    )
    return env


def _log_tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _healthy(api_url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait_healthy(pid: int, api_url: str, wait_s: float, log: Path) -> None:
    deadline = time.monotonic() + wait_s
    while not _healthy(api_url):
        if not _alive(pid):
            raise GristmillError(
                f"the Prefect server stopped during start-up; the end of {log}:\n{_log_tail(log)}"
            )
        if time.monotonic() > deadline:
            raise GristmillError(
                f"the Prefect server did not answer {api_url}/health within {wait_s:g} s and "
                f"was stopped; the end of {log}:\n{_log_tail(log)}"
            )
        time.sleep(0.25)


@contextlib.contextmanager
def _start_lock() -> Any:
    import fcntl

    path = _files()["start_lock"]
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # two starts at once: the second finds the first
        yield


def start(port: int | None = None, wait_s: float = 90) -> dict[str, Any]:
    """Start the server on 127.0.0.1 (a free port unless given) or report the running one."""
    files = _files()
    server_dir().mkdir(parents=True, exist_ok=True)
    with _start_lock():
        current = status()
        if current["starting"]:
            # Another start (or one interrupted) launched it: wait for it here.
            deadline = time.monotonic() + wait_s
            while (current := status())["starting"] and time.monotonic() < deadline:
                time.sleep(0.25)
        if current["running"]:
            if port is not None and port != current["port"]:
                raise InputError(
                    f"a gristmill server is already running on port {current['port']} "
                    f"(pid {current['pid']}); `gristmill server stop` first to move it to {port}"
                )
            if current["runner"]["state"] in ("absent", "stale"):
                _restart_runner(current)
                current = status()
            return {**current, "already_running": True}
        if current.get("pid") is not None:
            raise GristmillError(
                f"the gristmill server (pid {current['pid']}) does not answer after {wait_s:g} s;"
                f" `gristmill server stop` ends it (log: {files['log']})"
            )
        holders = _db_holders(files["database"], ignore={os.getpid()})
        if holders:
            command = " ".join(_cmdline(holders[0]) or ["?"]).strip()
            raise InputError(
                f"the server database {files['database']} is in use by process {holders[0]} "
                f"({command}); stop that process, or set GRISTMILL_HOME to use another database"
            )
        if port is None:
            port = _free_port()
        elif not _port_free(port):
            raise InputError(
                f"port {port} on {HOST} is in use; choose another with --port, or leave --port "
                "out for a free one"
            )
        return _launch(port, wait_s)


def _launch(port: int, wait_s: float) -> dict[str, Any]:
    from gristmill.storage.files import write_json_atomic, write_text_atomic

    files = _files()
    files["prefect_home"].mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with open(files["log"], "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", HOST,
             "--port", str(port)],
            env=_server_env(port), cwd=server_dir(), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    _children[process.pid] = process
    write_text_atomic(files["pid"], f"{process.pid}\n")
    api_url = f"http://{HOST}:{port}/api"
    runner_pid = _launch_runner(api_url)  # imports while the server starts: both at once
    state = {
        "pid": process.pid,
        "port": port,
        "url": f"http://{HOST}:{port}",
        "api_url": api_url,
        "database": str(files["database"]),
        "log": str(files["log"]),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "runner_pid": runner_pid,
    }
    # Written before the API answers: a server whose start was cut short is still found.
    write_json_atomic(files["state"], state)
    try:
        _wait_healthy(process.pid, api_url, wait_s, files["log"])
        _wait_runner(runner_pid, wait_s)
    except BaseException:  # it died, it did not answer in time, or Ctrl-C: no half-started server
        _stop_runner(runner_pid)
        _terminate(process.pid, timeout_s=10)
        _clean_stale(process.pid)
        raise
    return {**status(), "already_running": False, "startup_s": round(time.monotonic() - began, 2)}


def _launch_runner(api_url: str) -> int | None:
    """Start the warm runner (`gristmill.runner`) for commands that use this server; its pid
    (None with GRISTMILL_WARM=0). It runs this Python and this copy of gristmill, with the
    PREFECT_* settings of this process and the server's API (unless PREFECT_API_URL says
    another), which is what the commands it serves have."""
    from gristmill import warm

    if not warm.warm_enabled():
        return None
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PREFECT_API_URL": os.environ.get("PREFECT_API_URL") or api_url,
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root,
                                                       os.environ.get("PYTHONPATH")]))}  # fmt: skip
    with open(_files()["runner_log"], "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gristmill.runner"], env=env, cwd=server_dir(),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    _children[process.pid] = process
    return process.pid


def _wait_runner(pid: int | None, wait_s: float) -> None:
    """Wait until the runner serves (its state file names it); a runner that dies or is slow
    costs only its speed-up: commands then run in their own process."""
    from gristmill import warm

    deadline = time.monotonic() + wait_s
    while pid is not None and _is_our_runner(pid) and time.monotonic() < deadline:
        ready = warm.read_state()
        if ready is not None and ready["pid"] == pid:
            return
        time.sleep(0.1)


def _stop_runner(pid: int | None) -> None:
    if _is_our_runner(pid):
        _terminate(pid, timeout_s=15)  # type: ignore[arg-type]


def _restart_runner(current: dict[str, Any]) -> None:
    """Replace an absent or stale runner of the running server (gristmill's code changed)."""
    from gristmill.storage.files import write_json_atomic

    _stop_runner(current.get("runner_pid"))
    runner_pid = _launch_runner(current["api_url"])
    state = _read_state() or {}
    write_json_atomic(_files()["state"], {**state, "runner_pid": runner_pid})
    _wait_runner(runner_pid, 90)


def _terminate(pid: int, timeout_s: float) -> bool:
    """SIGTERM, wait up to timeout_s, then SIGKILL the server's process group; True if forced."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    forced = _alive(pid)
    if forced:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # its own session (start_new_session): the group is its
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    child = _children.pop(pid, None)
    if child is not None:
        child.wait(timeout=1)
    return forced


def stop(timeout_s: float = 30) -> dict[str, Any]:
    """Stop the server (SIGTERM, SIGKILL after timeout_s) and remove its state; says what it did."""
    current = status()
    if current.get("pid") is None:
        return {**current, "stopped": False}
    began = time.monotonic()
    _stop_runner(current.get("runner_pid"))
    forced = _terminate(current["pid"], timeout_s)
    _clean_stale(current["pid"])
    return {
        **current,
        "running": False,
        "starting": False,
        "stopped": True,
        "forced": forced,
        "stop_s": round(time.monotonic() - began, 2),
    }
