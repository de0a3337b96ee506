"""Progress reporting for long loops, decoupled from how it is shown (rich bar, logs, UI)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol


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
_factory: Callable[[str, float | None], ProgressTask] | None = None


def current_factory() -> Callable[[str, float | None], ProgressTask] | None:
    """The display installed now, so another display can be added beside it."""
    return _factory


def track(description: str, total: float | None) -> ProgressTask:
    """Start reporting a loop of `total` units (None when unknown)."""
    return _factory(description, total) if _factory is not None else SILENT


@contextlib.contextmanager
def reporting(factory: Callable[[str, float | None], ProgressTask]) -> Iterator[None]:
    """Show progress through `factory` while the block runs."""
    global _factory
    previous, _factory = _factory, factory
    try:
        yield
    finally:
        _factory = previous
