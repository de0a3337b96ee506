"""Flow-run heartbeats that do not hold up the end of every flow run.

Prefect 3.8 sends a flow run's heartbeats from a thread that sleeps in one-second steps and,
in the sync engine, joins that thread when the run ends: each flow and sub-flow run waits up
to a second (0.63 s measured for a `materialize` whose work took 0.34 s) for nothing. The
heartbeats themselves are worth keeping (the server uses them to find crashed runs), so only
the join goes: the thread is a daemon, stops at its next step, and sends nothing once the
run's stop event is set. Applied once, when the flows are imported; left alone when a Prefect
version's engine no longer has the hook.
"""

from __future__ import annotations

import functools
import inspect

from prefect import flow_engine

_HOOK = "_send_heartbeats"


def stop_joining_heartbeats() -> bool:
    """Make the sync flow engine leave its heartbeat thread to stop on its own; True if done."""
    send = getattr(flow_engine, _HOOK, None)
    if isinstance(send, functools.partial):  # applied already
        return True
    if send is None or "join_on_exit" not in inspect.signature(send).parameters:
        return False
    setattr(flow_engine, _HOOK, functools.partial(send, join_on_exit=False))
    return True
