"""The warm runner's fork and descriptor passing, with a fake command (no Prefect server): exit
codes, the client's terminal, cwd and environment, signals, dead clients, concurrency, refusals;
and when a client runs its command itself instead."""

from __future__ import annotations

import json
import os
import pty
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gristmill import warm

# A runner whose command is a fake: `echo CODE` prints what it sees and exits with CODE,
# `sleep FILE` writes its pid to FILE and sleeps until interrupted.
FAKE_RUNNER = """
import os, sys, threading, time
from pathlib import Path
from gristmill.runner import Runner

def command(request):
    args = request.argv[1:]
    if args[0] == "echo":
        print("out", os.getcwd(), os.environ.get("WARM_TEST"), sys.stdout.isatty(), flush=True)
        print("err", file=sys.stderr)
        return int(args[1])
    Path(args[1]).write_text(str(os.getpid()))
    print("sleeping", flush=True)
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 130
    return 0

if "--thread" in sys.argv:
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
Runner(Path(sys.argv[1]), command).serve(on_ready=lambda: print("ready", flush=True))
"""
# A client: runs argv on the runner at argv[1] and exits with its code (3 when it said local).
CLIENT = """
import sys
from pathlib import Path
from gristmill.warm import run_on_runner

code = run_on_runner(Path(sys.argv[1]), ["gristmill", *sys.argv[2:]])
sys.exit(3 if code is None else code)
"""


def _start_runner(path: Path, *flags: str) -> subprocess.Popen[str]:
    runner = subprocess.Popen(
        [sys.executable, "-c", FAKE_RUNNER, str(path), *flags], stdout=subprocess.PIPE, text=True
    )
    assert runner.stdout is not None and runner.stdout.readline().strip() == "ready"
    return runner


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fake runner's socket path (the runner stopped with SIGTERM at the end)."""
    path = tmp_path_factory.mktemp("warm") / "runner.sock"
    process = _start_runner(path)
    yield path
    process.terminate()
    assert process.wait(timeout=15) == 0
    assert not path.exists()  # the socket goes with the runner


def _client(path: Path, *args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", CLIENT, str(path), *args], **kwargs)  # type: ignore[call-overload]


def _wait_for(predicate: object, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_child_runs_in_the_clients_terminal_cwd_and_environment(
    runner: Path, tmp_path: Path
) -> None:
    assert stat.S_IMODE(runner.stat().st_mode) == 0o600
    primary, secondary = pty.openpty()
    client = _client(runner, "echo", "7", cwd=tmp_path, stdout=secondary,
                     stderr=subprocess.PIPE, env={**os.environ, "WARM_TEST": "seen"})  # fmt: skip
    os.close(secondary)
    _, errors = client.communicate(timeout=30)
    assert client.returncode == 7
    shown = os.read(primary, 4096).decode()
    os.close(primary)
    assert shown.split() == ["out", str(tmp_path), "seen", "True"]  # a terminal, as the client's
    assert errors.decode() == "err\n"


def test_ctrl_c_reaches_the_child_and_a_dead_client_stops_it(runner: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    client = _client(runner, "sleep", str(pid_file), stdout=subprocess.PIPE)
    _wait_for(pid_file.exists)
    client.send_signal(signal.SIGINT)
    output, _ = client.communicate(timeout=30)
    assert client.returncode == 130 and output.decode().split() == ["sleeping", "interrupted"]

    pid_file.unlink()
    client = _client(runner, "sleep", str(pid_file), stdout=subprocess.DEVNULL)
    _wait_for(lambda: pid_file.exists() and pid_file.read_text())
    child = int(pid_file.read_text())
    client.kill()
    client.wait()

    def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return False

    _wait_for(gone)  # SIGTERM from the runner; reaped by it


def test_commands_at_once_each_get_a_child(runner: Path, tmp_path: Path) -> None:
    files = [tmp_path / f"pid-{i}" for i in range(2)]
    clients = [_client(runner, "sleep", str(f), stdout=subprocess.DEVNULL) for f in files]
    _wait_for(lambda: all(f.exists() and f.read_text() for f in files))  # both running
    pids = {int(f.read_text()) for f in files}
    assert len(pids) == 2
    for client in clients:
        client.send_signal(signal.SIGTERM)
        client.wait(timeout=30)
    # SIGTERM killed each child (default action), and each client died the same way.
    assert [c.returncode for c in clients] == [-signal.SIGTERM] * 2


def test_a_runner_with_a_thread_sends_the_command_back(tmp_path: Path) -> None:
    path = tmp_path / "runner.sock"
    process = _start_runner(path, "--thread")
    try:
        client = _client(path, "echo", "0", stdout=subprocess.PIPE)
        output, _ = client.communicate(timeout=30)
        assert client.returncode == 3 and output == b""  # not forked: the client runs it
    finally:
        process.terminate()
        process.wait(timeout=15)


def _write_state(**changes: object) -> None:
    state = {"pid": os.getpid(), "socket": str(warm.socket_path()), "identity": warm.identity(),
             "code_mtime": warm.code_mtime(), **changes}  # fmt: skip
    warm.state_path().parent.mkdir(parents=True, exist_ok=True)
    warm.state_path().write_text(json.dumps(state))


def test_a_client_runs_here_without_a_runner_or_when_the_runner_differs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GRISTMILL_HOME", str(tmp_path))
    argv = ["gristmill", "select"]
    assert warm.hand_over(argv) is None  # no runner

    _write_state()  # a state file whose socket nobody listens on
    assert warm.hand_over(argv) is None
    _write_state(identity={**warm.identity(), "python": "/other/python"})
    assert warm.hand_over(argv) is None
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # other Prefect settings
    assert warm.hand_over(argv) is None
    assert capsys.readouterr().err == ""  # all of these silently

    _write_state(code_mtime=0.0)
    assert warm.hand_over(argv) is None
    assert "gristmill's code changed" in capsys.readouterr().err
    monkeypatch.setenv("GRISTMILL_WARM", "0")
    assert warm.hand_over(argv) is None
    assert capsys.readouterr().err == ""  # off: not even read


def test_the_client_module_imports_no_prefect() -> None:
    script = "import sys, gristmill.warm, gristmill.server; print('prefect' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert output.stdout.strip() == "False", output.stderr
