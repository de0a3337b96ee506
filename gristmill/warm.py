"""The client side of the warm runner: hand a command to it, or say to run it here.

`gristmill server start` launches, beside the Prefect server, a *runner* (`gristmill.runner`)
that has imported Prefect, the flows, DuckDB, PyArrow and NumPy once, and forks a child per
command. `main` is the gristmill command's light entry: before the CLI's own imports (about a
CPU-second on a small machine) it sends the command's argv, cwd, umask and environment, with its
stdin, stdout and stderr as file descriptors, over the runner's Unix socket (`runner.sock` in
the server directory, owner-only). The child runs the command exactly as the CLI would, checks
included (a bad input is refused there as fast: nothing it needs is imported on demand); the
terminal is the client's, so progress bars and colours are the same. Its exit status comes back
and the client exits with it. Ctrl-C, SIGTERM and SIGHUP in the client are forwarded to the
child's process group; a client that dies makes the runner stop its child. Entered through
`gristmill.cli.main` instead (an older console script), a flow command offers itself once its
checks have passed (`cli._flows`).

The command runs here instead, with nothing said, whenever the runner is absent or refuses (it
forks only while it has no thread of its own), was started from another Python, environment or
copy of gristmill, or under other PREFECT_* settings or thread counts (read once, at import);
and, with one line on stderr, when gristmill's code changed since the runner started.
GRISTMILL_WARM=0 turns the runner off (for `server start` as well).

Standard library only: this runs before anything heavy is imported, in every command.

Wire format: one message of a 4-byte big-endian length with the three descriptors attached,
then that many bytes of request JSON; after that, JSON lines both ways: the runner sends
`{"started": pid}` or `{"local": reason}`, then `{"exit": code}` or `{"signal": number}`; the
client sends `{"signal": number}` for each signal it forwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
from pathlib import Path
from typing import Any

from gristmill.server import server_dir

WARM_VARIABLE = "GRISTMILL_WARM"
# Commands that always run in their own process: the server's (`stop` ends the runner), serve
# (long-lived, with its own signal handling), quickstart (the newcomer's first command, offline;
# it writes sample data before its flow) and ui (it may open a browser).
LOCAL_COMMANDS = frozenset({"server", "serve", "quickstart", "ui"})
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
LENGTH = struct.Struct(">I")
PACKAGE = Path(__file__).resolve().parent


def main() -> None:
    """The gristmill command, entered here before the CLI's imports (typer, rich, DuckDB,
    PyArrow: about a CPU-second): run on the warm runner when one serves this process and
    exit with its code; otherwise (or for LOCAL_COMMANDS and bare options) run the CLI."""
    argv = list(sys.argv)
    offered = len(argv) > 1 and argv[1] not in LOCAL_COMMANDS and not argv[1].startswith("-")
    if offered and warm_enabled():
        prefect_defaults()
        use_local_server()
        code = hand_over(argv)
        if code is not None:
            sys.exit(code)
    from gristmill import cli

    cli.main(hand_over=not offered)


def prefect_defaults() -> None:
    """Prefect settings of every gristmill command, set before Prefect is imported (unless
    the environment sets them): its console quiet (runs still log to its API and UI), no
    telemetry waiting on a network that may not be there, and a temporary API given 90 s to
    start (20 s by default: too soon on a busy small machine)."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


def use_local_server() -> str | None:
    """Point Prefect at the running local gristmill server unless PREFECT_API_URL is set; the
    API URL the flows will use (None: Prefect's temporary API, which keeps no runs)."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    from gristmill.server import running_api_url

    url = running_api_url()
    if url:
        os.environ["PREFECT_API_URL"] = url
    return url


def warm_enabled() -> bool:
    """False when GRISTMILL_WARM turns the runner off (0, false, no, off)."""
    return os.environ.get(WARM_VARIABLE, "1").strip().lower() not in ("0", "false", "no", "off")


def socket_path() -> Path:
    """The runner's Unix socket, in the per-user server directory."""
    return server_dir() / "runner.sock"


def state_path() -> Path:
    """The runner's state file: its pid, socket and the fingerprint it was started with."""
    return server_dir() / "runner.json"


def code_mtime() -> float:
    """The newest modification time of gristmill's .py files (a cheap fingerprint of the code)."""
    return max(path.stat().st_mtime for path in PACKAGE.rglob("*.py"))


# Variables read once, when a library the runner has imported loads: Prefect's settings, and
# the thread counts OpenBLAS (NumPy) fixes at start-up.
IMPORT_TIME_PREFIXES = ("PREFECT_",)
IMPORT_TIME_VARIABLES = frozenset({"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"})


def identity() -> dict[str, Any]:
    """What a runner must share with this process to run its commands: the interpreter, its
    environment (sys.prefix), the gristmill package's directory and the variables read at
    import (PREFECT_* settings, thread counts)."""
    return {
        "python": sys.executable,
        "prefix": sys.prefix,
        "package": str(PACKAGE),
        "import_env": {k: v for k, v in os.environ.items()
                       if k.startswith(IMPORT_TIME_PREFIXES) or k in IMPORT_TIME_VARIABLES},
    }  # fmt: skip


def read_state() -> dict[str, Any] | None:
    """The runner's state file, or None when there is none (or it cannot be read)."""
    try:
        state = json.loads(state_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("pid"), int) else None


def hand_over(argv: list[str]) -> int | None:
    """Run the command on the warm runner: its exit code, or None to run it in this process."""
    if not warm_enabled():
        return None
    state = read_state()
    if state is None or state.get("identity") != identity():
        return None
    if state.get("code_mtime") != code_mtime():
        sys.stderr.write(
            "note: gristmill's code changed since the server started; running here "
            "(`gristmill server start` restarts its runner)\n"
        )
        return None
    return run_on_runner(Path(state["socket"]), argv)


def _descriptors() -> tuple[list[int], list[int]]:
    """stdin, stdout and stderr as descriptors to send (/dev/null for a closed one), and
    those opened here (to close once sent)."""
    sent, opened = [], []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            sent.append(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            sent.append(null)
            opened.append(null)
    return sent, opened


def _stream_encodings() -> dict[str, list[str | None]]:
    """Encoding and error handler of each standard stream, for the child's to match."""
    return {
        name: [getattr(stream, "encoding", None), getattr(stream, "errors", None)]
        for name, stream in (("stdin", sys.stdin), ("stdout", sys.stdout), ("stderr", sys.stderr))
    }


def request(argv: list[str]) -> dict[str, Any]:
    """What the runner's child needs to run the command as this process would."""
    umask = os.umask(0)
    os.umask(umask)
    return {
        "argv": argv,
        "cwd": os.getcwd(),
        "umask": umask,
        "env": dict(os.environ),
        "streams": _stream_encodings(),
    }


def _send_line(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def _lines(conn: socket.socket) -> Any:
    """JSON messages, one a line, until the peer closes."""
    buffer = b""
    while True:
        line, newline, rest = buffer.partition(b"\n")
        if newline:
            buffer = rest
            yield json.loads(line)
            continue
        chunk = conn.recv(4096)
        if not chunk:
            return
        buffer += chunk


def run_on_runner(path: Path, argv: list[str]) -> int | None:
    """Send the command to the runner listening on `path` and wait for its child: the exit
    code, or None when no runner answers there or it asks for a local run."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:  # a socket file left by a runner that is gone
        conn.close()
        return None
    with conn:
        payload = json.dumps(request(argv)).encode()
        fds, opened = _descriptors()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # what this process printed comes before what the child prints
        caught: list[int] = []

        def forward(signum: int, frame: Any) -> None:
            # Sent before the fork, a signal waits in the socket until the child exists.
            caught.append(signum)
            with contextlib.suppress(OSError):
                _send_line(conn, {"signal": signum})

        previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
        final = None
        try:
            try:
                socket.send_fds(conn, [LENGTH.pack(len(payload))], fds)
                conn.sendall(payload)
                messages = _lines(conn)
                first = next(messages, None)
            except OSError:
                first = None
            finally:
                for fd in opened:
                    os.close(fd)
            if first is not None and "started" in first:
                with contextlib.suppress(OSError):  # the runner died: said below
                    final = next(messages, None)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if first is None or "started" not in first:
            # {"local": reason}: the runner cannot fork now; this process runs the command,
            # and what the user sent meanwhile reaches it.
            for signum in caught:
                os.kill(os.getpid(), signum)
            return None
        return _exit_code(final)


def _exit_code(final: dict[str, Any] | None) -> int:
    """The code to exit with for the child's last message (its exit code or its signal)."""
    if final is None:
        sys.stderr.write("error: the gristmill runner stopped before the command finished\n")
        return 1
    if "signal" in final:  # the child was killed by a signal: end the same way
        signum = int(final["signal"])
        with contextlib.suppress(OSError, ValueError):
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        return 128 + signum
    return int(final["exit"])
