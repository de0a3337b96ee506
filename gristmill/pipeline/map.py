"""How work units are run: one after another, in a thread pool, or (in flows/) as Prefect tasks.

A work map takes a unit function and its units and yields the results as they finish, so the
caller can record them in the catalog in batches while the rest still run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar

U = TypeVar("U")
R = TypeVar("R")
WorkMap = Callable[[Callable[[U], R], Sequence[U]], Iterator[R]]
RECORD_EVERY_S = 2.0


def serial_map(fn: Callable[[U], R], units: Sequence[U]) -> Iterator[R]:
    """Run the units one after another in this thread (the default)."""
    return (fn(unit) for unit in units)


@dataclass(frozen=True)
class ThreadMap:
    """Run the units in a pool of `workers` threads (None: Python's default); for notebooks."""

    workers: int | None = None

    def __call__(self, fn: Callable[[U], R], units: Sequence[U]) -> Iterator[R]:
        """Yield each unit's result as it finishes; the first failure cancels the rest."""
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            pending: set[Future[R]] = {pool.submit(fn, unit) for unit in units}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield future.result()
            finally:
                for future in pending:
                    future.cancel()


def batched_by_time(results: Iterator[Any], seconds: float = RECORD_EVERY_S) -> Iterator[list]:
    """Group results so that the catalog is written about once per `seconds`.

    Opening and checkpointing DuckDB per result cost more than Prefect itself on a 100-shard
    run. A kill loses at most the batch not yet recorded, and the task cache serves it again.
    """
    batch: list = []
    since = time.monotonic()
    for result in results:
        batch.append(result)
        if time.monotonic() - since >= seconds:
            yield batch
            batch, since = [], time.monotonic()
    if batch:
        yield batch
