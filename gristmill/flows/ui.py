"""What the Prefect UI shows of a run: progress artifacts for long loops, selection tables.

The library reports progress through `gristmill.progress` and never imports Prefect; a flow
installs `progress_artifacts()` so that each loop also updates a progress artifact, next to
whatever the caller shows (the CLI's rich bars).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from gristmill import progress

logger = logging.getLogger(__name__)
# Seconds between two updates of one progress artifact: each update is an API call.
UPDATE_EVERY_S = 1.0


def artifact_key(prefix: str, name: str) -> str:
    """A valid artifact key (lowercase letters, digits and dashes) for a name."""
    return (prefix + "-" + "".join(c if c.isalnum() else "-" for c in name.lower()))[:100]


class _ArtifactProgress:
    """One loop's progress artifact; failures to reach the API never stop the loop."""

    def __init__(self, description: str, total: float) -> None:
        self.description = description
        self.total = total
        self.done = 0.0
        self.last_update = time.monotonic()
        self.guard = threading.Lock()  # loops may advance from several worker threads
        self.artifact_id = self._call(
            create_progress_artifact,
            0.0 if total else 100.0,
            key=artifact_key("progress", description),
            description=description,
        )

    def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as error:  # the UI is a view; the work goes on without it
            logger.warning("progress artifact %r not updated: %s", self.description, error)
            return None

    def _update(self) -> None:
        if self.artifact_id is not None and self.total:
            percent = min(100.0, 100.0 * self.done / self.total)
            self._call(update_progress_artifact, self.artifact_id, percent)
        self.last_update = time.monotonic()

    def advance(self, amount: float = 1) -> None:
        with self.guard:
            self.done += amount
            if time.monotonic() - self.last_update >= UPDATE_EVERY_S:
                self._update()

    def close(self) -> None:
        with self.guard:
            self._update()


class _Both:
    """Report one loop to two displays."""

    def __init__(self, first: progress.ProgressTask, second: progress.ProgressTask) -> None:
        self.first, self.second = first, second

    def advance(self, amount: float = 1) -> None:
        self.first.advance(amount)
        self.second.advance(amount)

    def close(self) -> None:
        self.first.close()
        self.second.close()


def _publishes(factory: Any) -> bool:
    return getattr(factory, "publishes_artifacts", False)


@contextlib.contextmanager
def progress_artifacts() -> Iterator[None]:
    """While the block runs, each loop of known length also updates a progress artifact."""
    shown = progress.current_factory()
    if _publishes(shown):  # a sub-flow of a flow that installed it already
        yield
        return

    def factory(description: str, total: float | None) -> progress.ProgressTask:
        display = shown(description, total) if shown is not None else progress.SILENT
        if total is None:
            return display
        return _Both(_ArtifactProgress(description, total), display)

    factory.publishes_artifacts = True  # type: ignore[attr-defined]
    with progress.reporting(factory):
        yield


def publish_selection(record: dict[str, Any]) -> None:
    """A table artifact per selection: kept and dropped per domain, budget used, top reasons."""
    summary = record["summary"]
    table = [
        {k: d[k] for k in ("domain", "candidates", "kept", "dropped", "kept_bytes")}
        for d in summary["domains"]
    ]
    reasons = ", ".join(f"{r} ({n})" for r, n in summary.get("top_reasons", []))
    budget = summary.get("budget") or {}
    allowed = budget.get("allowed")
    used = (
        f"{budget['used']:,.0f} of {'no limit' if allowed is None else f'{allowed:,.0f}'} "
        f"{budget['counts']} (pool {budget['pool']:,.0f})"
        if "used" in budget
        else "n/a"
    )
    create_table_artifact(
        key=artifact_key("selection", record["name"]),
        table=table,
        description=(
            f"Selection {record['name']}: {record['n_selected']} of {record['n_candidates']} "
            f"documents from {record['corpus']} by {record['selector']}. "
            f"Budget {record['budget'] or 'none'}; used {used}. "
            f"Top reasons for dropping: {reasons or 'n/a'}"
        ),
    )
