"""The warm runner: one process with Prefect and the flows imported, a forked child per command.

`gristmill server start` launches it beside the Prefect server (`python -m gristmill.runner`,
its own session, output to `runner.log`); `stop` ends it. It imports what every flow command
imports (Prefect, gristmill's flows, DuckDB, PyArrow, NumPy: 1.5-3 CPU-s on a small machine),
listens on `runner.sock` in the server directory (mode 0600, no TCP port) and serves requests
from `gristmill.warm` (the wire format is described there). For each request it forks a child
that takes the client's descriptors as its stdin, stdout and stderr, its cwd, umask, environment
and argv, and runs the command through the CLI exactly as the client would have; the child's
exit status goes back to the client.

Above the CLI in the layers (`runner -> cli -> flows`): it runs CLI commands.

It forks only while it has no Python thread besides its own and no native thread beyond those
the libraries started at import (OpenBLAS's and jemalloc's pools, which their fork handlers
stop and restart): a fork copies a lock another thread holds, held forever in the child.
Otherwise it answers `{"local": reason}` and the client runs the command itself. The loop is one
thread: `selectors` over the listening socket, each client's connection and a SIGCHLD wake-up
pipe, so several commands run at once, each in its own child.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gristmill.warm import LENGTH, identity, socket_path, state_path

# A child whose client went away gets SIGTERM, then SIGKILL this much later.
KILL_AFTER_S = 10.0
REQUEST_TIMEOUT_S = 10.0
# Imported once here so that no command pays for them: every flow command's modules, and the
# Prefect modules a flow run imports on first use.
PRELOADED = (
    "gristmill.cli", "numpy", "pyarrow", "pyarrow.parquet", "duckdb", "prefect",
    "gristmill.flows.tasks", "gristmill.flows.run", "gristmill.flows.ui",
    "gristmill.console_progress", "prefect.flow_engine", "prefect.task_engine",
    "prefect.artifacts", "prefect.logging.handlers", "prefect.events.worker",
    "prefect.client.orchestration", "prefect.results", "prefect.task_runners",
    "prefect.utilities.visualization", "fastapi.encoders", "pandas", "pyarrow.pandas_compat",
    "gristmill.pipeline.curation", "gristmill.pipeline.inspection", "gristmill.pipeline.export",
    # The selectors that import in a few milliseconds once the above are in (not those that
    # bring PyTorch or the dedup stack: seconds and hundreds of MB, for commands of minutes).
    *(f"gristmill.selectors.{name}" for name in ("quality", "decontaminate", "dsir", "language",
      "url_filter", "cartography", "learnability", "lm_loss", "classifier")),
)  # fmt: skip


@dataclass
class Request:
    """A command to run: as `gristmill.warm.request` sends it, with the client's descriptors."""

    argv: list[str]
    cwd: str
    umask: int
    env: dict[str, str]
    streams: dict[str, list[str | None]]
    fds: list[int]


@dataclass
class Client:
    """One client's connection and, once forked, its child."""

    conn: socket.socket
    pid: int | None = None
    kill_at: float | None = None
    buffer: bytes = field(default=b"")
    command: str = ""
    began: float = 0.0


def native_threads() -> int | None:
    """This process's threads as the kernel counts them (None where /proc cannot tell)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the client closed its connection mid-request")
        data += chunk
    return data


def receive_request(conn: socket.socket) -> Request:
    """Read one request (length, descriptors, JSON) from a client's connection."""
    header, fds, _, _ = socket.recv_fds(conn, LENGTH.size, 3)
    try:
        header += _recv_exact(conn, LENGTH.size - len(header))
        (size,) = LENGTH.unpack(header)
        body = json.loads(_recv_exact(conn, size))
        if len(fds) != 3:
            raise ConnectionError(f"expected 3 descriptors, got {len(fds)}")
        return Request(**body, fds=fds)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _same_user(conn: socket.socket) -> bool:
    """True when the peer runs as this process's user (Linux SO_PEERCRED; elsewhere the
    socket's owner-only mode is the check)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    credentials = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", credentials)
    return uid == os.getuid()


def _log(line: str) -> None:
    """One line of the runner's log (its stdout: runner.log in the server directory)."""
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} {line}", flush=True)


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):  # a client that is gone hears nothing
        conn.sendall(json.dumps(message).encode() + b"\n")


def _stream(fd: int, mode: str, encoding: str | None, errors: str | None) -> io.TextIOWrapper:
    """A standard stream on `fd` as Python opens one (stdout line-buffered on a terminal,
    stderr always), in the client's encoding."""
    raw = io.FileIO(fd, mode, closefd=False)
    buffered: Any = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
    line_buffering = mode == "w" and (raw.isatty() or fd == 2)
    return io.TextIOWrapper(buffered, encoding, errors, line_buffering=line_buffering)


def become_command(request: Request) -> None:
    """Turn this freshly forked child into the client's command: its own process group, the
    default signal handlers, the client's descriptors, cwd, umask, environment and argv."""
    os.setpgid(0, 0)
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(request.fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request.cwd)
    os.umask(request.umask)
    os.environ.clear()
    os.environ.update(request.env)
    sys.argv = list(request.argv)
    for target, (name, mode) in enumerate((("stdin", "r"), ("stdout", "w"), ("stderr", "w"))):
        encoding, errors = request.streams.get(name, [None, None])
        setattr(sys, name, _stream(target, mode, encoding, errors))
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()  # each command its own global NumPy state, as in a fresh process


def finish_child(code: int) -> None:
    """End the child as an interpreter ends: wait for non-daemon threads, run the exit
    handlers, flush the streams; then leave without unwinding into the runner's loop."""
    import atexit

    try:
        # What the interpreter does at exit, in its order: the threading module's exit hooks
        # (thread pools wind down), the wait for non-daemon threads, then the atexit handlers.
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def exit_code(error: SystemExit) -> int:
    """The process exit code Python gives a SystemExit."""
    if error.code is None:
        return 0
    if isinstance(error.code, int):
        return error.code
    sys.stderr.write(f"{error.code}\n")
    return 1


def run_cli_command(request: Request) -> int:
    """Run the request's command through a freshly executed gristmill.cli (its consoles see
    this child's terminal and environment); its exit code."""
    import importlib

    import gristmill.cli

    cli = importlib.reload(gristmill.cli)
    try:
        # Usage lines name the program `gristmill`, as the console script's do.
        cli.app(args=request.argv[1:], prog_name="gristmill")
    except SystemExit as error:
        return exit_code(error)
    return 0


class Runner:
    """The accept-and-fork loop over one listening Unix socket (single-threaded)."""

    def __init__(self, path: Path, command: Callable[[Request], int]) -> None:
        self.path = path
        self.command = command
        self.selector = selectors.DefaultSelector()
        self.clients: dict[int, Client] = {}  # by connection fd
        self.stopping = False
        self.threads_at_start = native_threads()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def fork_refusal(self) -> str | None:
        """Why forking now is unsafe (a thread that is not ours), or None."""
        if threading.active_count() != 1:
            return f"{threading.active_count()} Python threads"
        now = native_threads()
        if now is not None and self.threads_at_start is not None and now > self.threads_at_start:
            return f"{now} threads, {self.threads_at_start} at start"
        return None

    def bind(self) -> None:
        """Listen on the socket path, owner-only (created under umask 0177, no window)."""
        self.path.unlink(missing_ok=True)
        previous = os.umask(0o177)
        try:
            self.listener.bind(str(self.path))
        finally:
            os.umask(previous)
        self.listener.listen(16)
        self.listener.setblocking(False)

    def serve(self, on_ready: Callable[[], None] = lambda: None) -> None:
        """Serve until SIGTERM or SIGINT; then stop the children and remove the socket."""
        self.bind()
        owner = os.getpid()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(wake_r, selectors.EVENT_READ, "wake")
        try:
            on_ready()
            while not (self.stopping and not self._children()):
                for key, _ in self.selector.select(self._timeout()):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(BlockingIOError):
                            os.read(wake_r, 512)
                    else:
                        self._read_client(self.clients[key.fd])
                self._reap()
                self._enforce_deadlines()
        finally:
            if os.getpid() == owner:
                signal.set_wakeup_fd(-1)
                self.listener.close()
                self.path.unlink(missing_ok=True)
                os.close(wake_r)
                os.close(wake_w)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGCHLD:
            return  # the wake-up pipe wakes the loop, which reaps
        if not self.stopping:
            self.stopping = True
            self.selector.unregister(self.listener)
            now = time.monotonic()
            for client in self.clients.values():
                if client.pid is not None:
                    self._signal_child(client, signal.SIGTERM)
                    client.kill_at = now + KILL_AFTER_S

    def _children(self) -> list[Client]:
        return [c for c in self.clients.values() if c.pid is not None]

    def _timeout(self) -> float | None:
        deadlines = [c.kill_at for c in self.clients.values() if c.kill_at is not None]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _accept(self) -> None:
        with contextlib.suppress(BlockingIOError):
            conn, _ = self.listener.accept()
            if not _same_user(conn):  # the socket is 0600; this holds even if it were not
                conn.close()
                return
            conn.settimeout(REQUEST_TIMEOUT_S)
            try:
                request = receive_request(conn)
            except (OSError, ValueError, TypeError, ConnectionError) as error:
                _log(f"bad request: {error}")
                conn.close()
                return
            refusal = self.fork_refusal()
            if refusal is not None:
                _log(f"not forking ({refusal}): the client runs the command itself")
                _send(conn, {"local": refusal})
                for fd in request.fds:
                    os.close(fd)
                conn.close()
                return
            self._fork(Client(conn), request)

    def _fork(self, client: Client, request: Request) -> None:
        pid = os.fork()
        if pid == 0:
            self._in_child(client, request)
        for fd in request.fds:
            os.close(fd)
        client.pid = pid
        client.command = " ".join(["gristmill", *request.argv[1:]])
        client.began = time.monotonic()
        client.conn.setblocking(False)
        self.clients[client.conn.fileno()] = client
        self.selector.register(client.conn, selectors.EVENT_READ, "client")
        _send(client.conn, {"started": pid})

    def _in_child(self, client: Client, request: Request) -> None:
        code = 1
        try:
            self.selector.close()
            self.listener.close()
            for other in self.clients.values():
                other.conn.close()
            client.conn.close()
            become_command(request)
            code = self.command(request)
        except SystemExit as error:
            code = exit_code(error)
        except BaseException:
            traceback.print_exc()
        finally:
            finish_child(code)

    def _signal_child(self, client: Client, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(client.pid, signum)  # type: ignore[arg-type]

    def _read_client(self, client: Client) -> None:
        try:
            chunk = client.conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # the client is gone: stop its child (SIGKILL if it lingers)
            self.selector.unregister(client.conn)
            if client.kill_at is None:
                self._signal_child(client, signal.SIGTERM)
                client.kill_at = time.monotonic() + KILL_AFTER_S
            return
        client.buffer += chunk
        while b"\n" in client.buffer:
            line, _, client.buffer = client.buffer.partition(b"\n")
            with contextlib.suppress(ValueError, KeyError, TypeError):
                signum = int(json.loads(line)["signal"])
                if signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    self._signal_child(client, signum)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            client = next((c for c in self.clients.values() if c.pid == pid), None)
            if client is None:
                continue
            if os.WIFSIGNALED(status):
                outcome = {"signal": os.WTERMSIG(status)}
            else:
                outcome = {"exit": os.waitstatus_to_exitcode(status)}
            _send(client.conn, outcome)
            _log(f"pid {pid} {client.command!r}: {outcome} after "
                 f"{time.monotonic() - client.began:.2f} s")  # fmt: skip
            self._close(client)

    def _close(self, client: Client) -> None:
        self.clients.pop(client.conn.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(client.conn)
        client.conn.close()

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for client in list(self.clients.values()):
            if client.kill_at is not None and now >= client.kill_at:
                self._signal_child(client, signal.SIGKILL)
                client.kill_at = None


def preload() -> None:
    """Import every module in PRELOADED (the CLI first: it sets Prefect's defaults)."""
    import importlib

    for name in PRELOADED:
        importlib.import_module(name)


def write_state(path: Path) -> None:
    """Record the pid, socket and identity of this runner for clients to compare theirs with."""
    from gristmill.storage.files import write_json_atomic
    from gristmill.warm import code_mtime

    write_json_atomic(state_path(), {
        "pid": os.getpid(), "socket": str(path), "identity": identity(),
        "code_mtime": code_mtime(), "threads": native_threads(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    })  # fmt: skip


def main() -> None:
    """Import once, then serve commands on the server directory's socket until stopped."""
    began = time.monotonic()
    preload()
    path = socket_path()
    runner = Runner(path, run_cli_command)
    _log(f"imported in {time.monotonic() - began:.2f} s; serving {path} (pid {os.getpid()})")
    try:
        runner.serve(on_ready=lambda: write_state(path))
    finally:
        state = state_path()
        with contextlib.suppress(OSError, ValueError):
            if json.loads(state.read_text(encoding="utf-8")).get("pid") == os.getpid():
                state.unlink()


if __name__ == "__main__":
    main()
