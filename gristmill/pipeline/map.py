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


# Work per group when units are small: a Prefect task run costs tens of milliseconds of API
# and server time, so a 350 KB shard per task spent as much on Prefect as on the work.
GROUP_BYTES = 16 << 20
GROUPS_PER_WORKER = 2  # at least this many groups per worker, so the workers stay busy


def plan_groups(
    sizes: Sequence[int | None], workers: int, target_bytes: int = GROUP_BYTES
) -> list[range]:
    """Split units (their sizes in bytes, in order) into consecutive groups of enough work.

    Groups hold about `target_bytes`, or less where a smaller share of the total gives every
    worker `GROUPS_PER_WORKER` groups; a unit joins the group its middle byte falls in, so the
    groups come out even. A unit of unknown size runs alone.
    """
    known = sum(size for size in sizes if size is not None)
    share = known / max(1, workers * GROUPS_PER_WORKER)
    target = max(1.0, min(float(target_bytes), share))
    groups: list[range] = []
    start, offset, current = 0, 0, None
    for index, size in enumerate(sizes):
        slot = None if size is None else int((offset + size / 2) // target)
        if index > start and (slot is None or slot != current):
            groups.append(range(start, index))
            start = index
        current = slot if slot is not None else -1 - index  # an unknown size ends its group
        offset += size or 0
    if start < len(sizes):
        groups.append(range(start, len(sizes)))
    return groups
