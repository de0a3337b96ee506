"""Serve a recipe as a Prefect deployment on a schedule.

`serve` is a long-running process someone watches, so it needs an API with history: it uses the
configured API (PREFECT_API_URL, which the CLI sets to a running gristmill server) and otherwise
starts the gristmill server and says so. The server keeps running after serve stops, so the
history of the served runs stays in the UI. (`run` never starts one: a first command stays offline
and leaves no process behind.)

While serving, a line per run is logged when it starts and when it ends (its state and duration),
read from the API. On exit (Ctrl-C or SIGTERM alike) the deployment is paused, so no runs pile up
as Late while nothing serves them; the next serve of the same name resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.schedules import CronSchedule
from prefect.client.schemas.sorting import FlowRunSort
from prefect.runner import Runner
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings
from pydantic import ValidationError

from gristmill import server
from gristmill.errors import InputError
from gristmill.flows.run import run_recipe_flow

FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
POLL_S = 2.0


def check_schedule(cron: str | None, interval: float | None) -> None:
    """InputError unless exactly one of a valid cron string and a positive interval is given."""
    if (cron is None) == (interval is None):
        raise InputError("serve needs exactly one of --cron and --interval")
    if interval is not None and interval <= 0:
        raise InputError(f"--interval must be a positive number of seconds, not {interval:g}")
    if cron is not None:
        try:
            CronSchedule(cron=cron)
        except ValidationError:
            raise InputError(f"--cron {cron!r} is not a valid cron schedule") from None


def _stderr_line(message: str) -> None:
    print(f"{datetime.now():%H:%M:%S} {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def api_for_serving(log: Callable[[str], None] = _stderr_line) -> Iterator[str]:
    """The configured API URL; without one, the gristmill server's (started if need be)."""
    configured = get_current_settings().api.url
    if configured:
        yield configured
        return
    url = server.running_api_url()
    if url is None:
        started = server.start()
        url = started["api_url"]
        log(
            f"started the gristmill server at {started['url']} (history in "
            f"{started['database']}); it keeps running after serve stops: "
            "`gristmill server stop` ends it"
        )
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield url


def _duration_s(run: FlowRun) -> float:
    if run.total_run_time and run.total_run_time.total_seconds() > 0:
        return run.total_run_time.total_seconds()
    if run.start_time and run.end_time:
        return (run.end_time - run.start_time).total_seconds()
    return 0.0


class RunLog:
    """Logs a line when a run of one deployment starts and when it ends (state, duration).

    Reads the deployment's flow runs from the API every `poll_s` seconds in a thread: the runs
    execute in child processes of the runner, so their own hooks would log there, not here.
    """

    def __init__(
        self, deployment_id: uuid.UUID, log: Callable[[str], None], poll_s: float = POLL_S
    ) -> None:
        self.deployment_id = deployment_id
        self.log = log
        self.poll_s = poll_s
        self.started: dict[uuid.UUID, str] = {}  # id: name
        self.ended: set[uuid.UUID] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _runs(self) -> list[FlowRun]:
        # Runs that started, latest first: a schedule keeps up to 100 future runs Scheduled.
        started = [StateType.RUNNING, *FINAL]
        with get_client(sync_client=True) as client:
            return client.read_flow_runs(
                deployment_filter=DeploymentFilter(
                    id=DeploymentFilterId(any_=[self.deployment_id])
                ),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=started))
                ),
                sort=FlowRunSort.START_TIME_DESC,
                limit=50,
            )

    def poll(self) -> None:
        """Log the runs that started or ended since the last poll."""
        for run in reversed(self._runs()):
            state = run.state.type if run.state else None
            # Runs of a deployment share their name (`recipe web`): the id tells them apart.
            label = f"{run.name} ({str(run.id)[:8]})"
            if run.id not in self.started and (state is StateType.RUNNING or state in FINAL):
                self.started[run.id] = run.name
                self.log(f"run {label} started")
            if state in FINAL and run.id not in self.ended:
                self.ended.add(run.id)
                name = run.state.name if run.state else str(state)
                self.log(f"run {label} ended {name} after {_duration_s(run):.1f} s")

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception as error:  # a missed poll must not end the serving
                self.log(f"could not read the runs ({type(error).__name__}: {error}); retrying")

    def start(self) -> None:
        """Note the runs that exist already (not logged), then watch in a daemon thread."""
        for run in self._runs():
            self.started[run.id] = run.name
            if run.state and run.state.type in FINAL:
                self.ended.add(run.id)
        context = contextvars.copy_context()  # the thread sees this one's Prefect settings
        self._thread = threading.Thread(
            target=context.run, args=(self._watch,), name="gristmill-run-log", daemon=True
        )
        self._thread.start()

    def running(self) -> list[str]:
        """Names of the runs seen started and not yet ended."""
        return [name for run_id, name in self.started.items() if run_id not in self.ended]

    def stop(self) -> None:
        """Stop watching, and log what ended since the last poll."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_s + 10)
        with contextlib.suppress(Exception):
            self.poll()


async def _serve_until_stopped(served: Runner, run_log: RunLog, log: Callable[[str], None]) -> None:
    """Run the runner until Ctrl-C or SIGTERM, both by one path: the first cancels the runner
    (a run in progress finishes first), a second raises KeyboardInterrupt (abandons it)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signals = 0

    def stopping() -> None:
        running = run_log.running()
        log(
            f"stopping; run {', '.join(running)} finishes first (again to abandon it)"
            if running
            else "stopping"
        )
        task.cancel()

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            raise KeyboardInterrupt
        loop.call_soon_threadsafe(stopping)  # a signal handler only hands work to the loop

    # A background job's SIGINT is ignored (Ctrl-C is not for it): leave it so.
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, on_signal)
    # Runner.start installs `handle_sigterm` for SIGTERM; its own exits from inside the loop.
    served.handle_sigterm = on_signal  # type: ignore[method-assign]
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await served.start()
    finally:
        if signal.getsignal(signal.SIGINT) is on_signal:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def pause_deployment(deployment_id: uuid.UUID) -> int:
    """Pause a deployment's schedule and delete its scheduled runs that never ran; how many.

    Pausing alone keeps the runs already due (PATCH deletes future ones only), and those
    would turn Late and stay so while nothing serves them.
    """
    with get_client(sync_client=True) as client:
        client.pause_deployment(deployment_id)
        due = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))
            ),
        )
        unstarted = [run for run in due if run.auto_scheduled and run.run_count == 0]
        for run in unstarted:
            client.delete_flow_run(run.id)
    return len(unstarted)


def serve_recipe(
    recipe_file: str,
    workspace: str,
    name: str,
    cron: str | None = None,
    interval: float | None = None,
    runner: str = "threads",
    workers: int | None = None,
    address: str | None = None,
    log: Callable[[str], None] = _stderr_line,
) -> None:
    """Serve the whole-recipe flow on a cron or interval schedule; blocks until interrupted.

    Each run reads the recipe file anew, so an edit takes effect at the next run. One run at a
    time: a run that overlapped the previous one would only wait for its workspace lock.
    """
    check_schedule(cron, interval)
    with api_for_serving(log) as api_url:
        # The schedule is paused here after the runner stops, not by the runner (its pause runs
        # while it is being cancelled).
        served = Runner(name=name, pause_on_shutdown=False, limit=1)
        deployment_id = served.add_flow(
            run_recipe_flow,
            name=name,
            cron=cron,
            interval=interval,
            paused=False,  # resume a schedule an earlier serve paused on exit
            parameters={
                "recipe": recipe_file,
                "workspace": workspace,
                "runner": runner,
                "workers": workers,
                "address": address,
            },
        )
        run_log = RunLog(deployment_id, log)
        run_log.start()
        log(f"serving deployment {run_recipe_flow.name}/{name} on {api_url}")
        try:
            asyncio.run(_serve_until_stopped(served, run_log, log))
        except KeyboardInterrupt:  # a second signal while the runner stopped
            pass
        finally:
            run_log.stop()
            removed = pause_deployment(deployment_id)
            log(
                f"stopped; the schedule of {run_recipe_flow.name}/{name} is paused"
                + (f" ({removed} due runs removed)" if removed else "")
            )
