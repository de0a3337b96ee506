"""Serve a recipe as a Prefect deployment on a schedule."""

from __future__ import annotations

from prefect.client.schemas.schedules import CronSchedule
from pydantic import ValidationError

from gristmill.errors import InputError
from gristmill.flows.run import run_recipe_flow


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


def serve_recipe(
    recipe_file: str,
    workspace: str,
    name: str,
    cron: str | None = None,
    interval: float | None = None,
    runner: str = "threads",
    workers: int | None = None,
    address: str | None = None,
) -> None:
    """Serve the whole-recipe flow on a cron or interval schedule; blocks until interrupted.

    Each run reads the recipe file anew, so an edit takes effect at the next run. One run at a
    time: a run that overlapped the previous one would only wait for its workspace lock.
    """
    check_schedule(cron, interval)
    run_recipe_flow.serve(
        name=name,
        cron=cron,
        interval=interval,
        parameters={
            "recipe": recipe_file,
            "workspace": workspace,
            "runner": runner,
            "workers": workers,
            "address": address,
        },
        limit=1,
        pause_on_shutdown=False,
        print_starting_message=False,
    )
