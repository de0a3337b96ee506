"""Progress reporting for long loops, decoupled from how it is shown (rich bar, logs, UI).

A loop calls `track(description, total, unit)` once and advances it as its work finishes; what
is shown is up to the factory installed with `reporting` (the CLI's bars, the flows' artifacts).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

T = TypeVar("T")


class ProgressTask(Protocol):
    """A running loop's progress."""

    def advance(self, amount: float = 1) -> None:
        """Count `amount` more units done."""

    def close(self) -> None:
        """The loop has ended."""


class _Silent:
    def advance(self, amount: float = 1) -> None:
        pass

    def close(self) -> None:
        pass


SILENT: ProgressTask = _Silent()
# A factory takes (description, total) and, when the loop names one, unit= (e.g. "docs").
Factory = Callable[..., ProgressTask]
_factory: Factory | None = None


def current_factory() -> Factory | None:
    """The display installed now, so another display can be added beside it."""
    return _factory


def track(description: str, total: float | None, unit: str = "") -> ProgressTask:
    """Start reporting a loop of `total` units (None when unknown) of what `unit` names."""
    return SILENT if _factory is None else start_with(_factory, description, total, unit)


def start_with(
    factory: Factory, description: str, total: float | None, unit: str = ""
) -> ProgressTask:
    """Start a loop on one factory (a display that shows its loops on another calls this)."""
    # unit= only when named: factories written for (description, total) keep working.
    return factory(description, total, unit=unit) if unit else factory(description, total)


def advancing(
    results: Iterable[T], task: ProgressTask, amount: Callable[[T], float] | None = None
) -> Iterator[T]:
    """Yield each result as it arrives, advancing `task` by `amount(result)` (1 without) first.

    Put it between a work map and any batching, so the display moves per finished unit and not
    per recorded batch."""
    for result in results:
        task.advance(1 if amount is None else amount(result))
        yield result


@contextlib.contextmanager
def reporting(factory: Factory) -> Iterator[None]:
    """Show progress through `factory` while the block runs."""
    global _factory
    previous, _factory = _factory, factory
    try:
        yield
    finally:
        _factory = previous
