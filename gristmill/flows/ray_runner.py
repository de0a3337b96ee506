"""Ray on one machine, on loopback only: gristmill's servers never listen on other interfaces.

Ray turns a node address of 127.0.0.1 into the host's network address, and binds its GCS,
raylet, workers, agents and metrics exporters to it or to every interface, unless it believes
it runs where clusters are unsupported (macOS, Windows). Starting Ray with that belief is the
only way to keep a local instance on loopback. A cluster given by `--address` is joined as it is,
except that a driver joining one at a loopback address (a head started here with
`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ray start --head --node-ip-address 127.0.0.1`) holds the
same belief, so that it looks for the cluster's raylet on loopback and not on the host's address.
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
        # "local": a new instance even when another Ray runs on this machine (without it,
        # ray.init joins the newest one it finds, someone else's cluster included).
        ray.init(**{"address": "local", "include_dashboard": False, **init_kwargs})
    node = ray.util.get_node_ip_address()
    if not ipaddress.ip_address(node).is_loopback:
        ray.shutdown()
        raise GristmillError(
            f"this Ray version started on {node}, not on loopback; start a cluster yourself "
            "and pass its --address"
        )


def _joining(address: str | None) -> contextlib.AbstractContextManager[None]:
    """The context a driver joins `address` in: single-machine mode for a loopback address."""
    return _single_machine() if is_loopback_address(address) else contextlib.nullcontext()


def join_ray(address: str) -> None:
    """Connect this process to the Ray cluster at `address` (see the module's docstring)."""
    with _joining(address):
        ray.init(address)


def is_loopback_address(address: str | None) -> bool:
    """True for a cluster address (`host:port`, `ray://host:port`) on this machine's loopback."""
    if not address or address == "auto":
        return False
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


class LocalRayTaskRunner(RayTaskRunner):
    """prefect-ray's task runner, but a Ray instance it starts itself listens on loopback only."""

    def __enter__(self) -> LocalRayTaskRunner:
        self._started_ray = self.address is None and not ray.is_initialized()
        if self._started_ray:
            start_local_ray(**self.init_kwargs)
        with _joining(self.address):
            super().__enter__()  # connects to the address, or finds Ray running and keeps it
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            super().__exit__(*exc_info)
        finally:
            if self._started_ray:
                ray.shutdown()
