"""Runtime safety: Ray's own task runner starts Ray on loopback."""

from __future__ import annotations

import pytest


def test_the_ray_task_runner_starts_its_own_ray_on_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without an address, the runner starts Ray itself, through the loopback-only start that
    `cluster` uses (checked socket by socket in test_orchestration), not prefect-ray's."""
    pytest.importorskip("prefect_ray")
    import ray

    from gristmill.flows import ray_runner, task_runner

    class Started(Exception):
        pass

    def start(**init_kwargs: object) -> None:
        raise Started(init_kwargs)

    monkeypatch.setattr(ray_runner, "start_local_ray", start)
    assert not ray.is_initialized()
    with pytest.raises(Started) as started, task_runner("ray", 3):
        pass
    assert started.value.args[0]["num_cpus"] == 3
