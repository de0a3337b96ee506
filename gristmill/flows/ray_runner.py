"""Ray on one machine, on loopback only: gristmill's servers never listen on other interfaces.

Ray turns a node address of 127.0.0.1 into the host's network address, and binds its GCS,
raylet, workers, agents and metrics exporters to it or to every interface, unless it believes
it runs where clusters are unsupported (macOS, Windows). Starting Ray with that belief is the
only way to keep a local instance on loopback; clusters given by `--address` are left as they are.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator
from typing import Any

import ray
from prefect_ray import RayTaskRunner
from ray._private import ray_constants

from gristmill.errors import GristmillError


@contextlib.contextmanager
def _single_machine() -> Iterator[None]:
    # Read by ray._private.services.get_node_ip_address while ray.init starts the node.
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def start_local_ray(**init_kwargs: Any) -> None:
    """Start a local Ray instance (no dashboard) whose every component listens on loopback."""
    with _single_machine():
        ray.init(**{"include_dashboard": False, **init_kwargs})
    node = ray.util.get_node_ip_address()
    if not ipaddress.ip_address(node).is_loopback:
        ray.shutdown()
        raise GristmillError(
            f"this Ray version started on {node}, not on loopback; start a cluster yourself "
            "and pass its --address"
        )


class LocalRayTaskRunner(RayTaskRunner):
    """prefect-ray's task runner, but a Ray instance it starts itself listens on loopback only."""

    def __enter__(self) -> LocalRayTaskRunner:
        self._started_ray = self.address is None and not ray.is_initialized()
        if self._started_ray:
            start_local_ray(**self.init_kwargs)
        super().__enter__()  # finds Ray running, so it neither starts nor stops it
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            super().__exit__(*exc_info)
        finally:
            if self._started_ray:
                ray.shutdown()
