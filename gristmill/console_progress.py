"""Progress bars on a terminal: one rich bar per loop the library reports, with its rate.

The CLI wraps a command in `rich_progress(err, quiet)`; the library only calls
`gristmill.progress.track`. Nothing is drawn with `quiet`, or when the console is not a
terminal (a log file gets no bar frames).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column
from rich.text import Text

from gristmill import progress

BYTE_UNITS = ("B", "kB", "MB", "GB", "TB")


def format_amount(value: float, unit: str) -> str:
    """`12,500 docs`, or `3.2 MB` for bytes."""
    if unit == "bytes":
        for name in BYTE_UNITS:
            if abs(value) < 1000 or name == BYTE_UNITS[-1]:
                return f"{value:,.0f} {name}" if name == "B" else f"{value:,.1f} {name}"
            value /= 1000
    return f"{value:,.0f} {unit}".rstrip()


class CountColumn(ProgressColumn):
    """`done/total` (`3.2 MB/10.0 MB` for bytes; just `done` when the total is unknown)."""

    def render(self, task: Task) -> Text:
        """The count of the task's units done, out of its total."""
        unit = task.fields.get("unit", "")
        if unit == "bytes":  # each side its own prefix
            parts = [format_amount(task.completed, unit)]
            parts += [format_amount(task.total, unit)] if task.total is not None else []
        else:  # the rate names the unit: the count stays short at 80 columns
            parts = [f"{task.completed:,.0f}"] + ([f"{task.total:,.0f}"] if task.total else [])
        return Text("/".join(parts), style="progress.download")


class RateColumn(ProgressColumn):
    """Units per second over the last few advances (`4,120 docs/s`), blank until known."""

    def render(self, task: Task) -> Text:
        """The task's rate in its units per second."""
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("")
        unit = task.fields.get("unit", "") or "units"
        return Text(f"{format_amount(speed, unit)}/s", style="progress.data.speed")


class RichTask:
    """One loop's bar; the bar stops its clock when the loop ends."""

    def __init__(self, bar: Progress, description: str, total: float | None, unit: str) -> None:
        self.bar = bar
        self.id = bar.add_task(description, total=total, unit=unit)

    def advance(self, amount: float = 1) -> None:
        """Move the bar `amount` units on."""
        self.bar.advance(self.id, amount)

    def close(self) -> None:
        """Freeze the bar at what was done (its elapsed time and rate stay shown)."""
        self.bar.stop_task(self.id)


def _columns() -> tuple[Any, ...]:
    """Description, bar, percentage, count, rate, elapsed: one line of 80 columns for a
    description of up to about 25 characters; a longer one is cut with an ellipsis."""
    fixed = Column(no_wrap=True)
    return (
        TextColumn("[progress.description]{task.description}",
                   table_column=Column(no_wrap=True, overflow="ellipsis")),
        BarColumn(bar_width=16), TaskProgressColumn(), CountColumn(table_column=fixed),
        RateColumn(table_column=fixed), TimeElapsedColumn(),
    )  # fmt: skip


@contextlib.contextmanager
def rich_progress(console: Console, quiet: bool = False) -> Iterator[None]:
    """While the block runs, draw a bar on `console` for each loop with work to do."""
    if quiet or not console.is_terminal:
        yield
        return
    with Progress(*_columns(), console=console, transient=False) as bar:

        def factory(description: str, total: float | None, unit: str = "") -> progress.ProgressTask:
            if total == 0:  # nothing to do (every shard reused): a bar would sit at 0%
                return progress.SILENT
            return RichTask(bar, description, total, unit)

        with progress.reporting(factory):
            yield
