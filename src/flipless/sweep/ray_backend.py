"""The Ray backend: one Ray task per point, for sweeps that outgrow one machine.

Needs the ``flipless[ray]`` extra (ray is imported only here, when the backend is built).
Each point runs as a remote task asking for ``cpus_per_point`` CPUs, with as many torch
threads (or ``threads``); the driver (this process) waits with ``ray.wait`` and appends each record to the
store as it arrives, so the store has a single writer. The workers must see the sweep folder
at the same path (one machine, or a shared file system) and have flipless installed.

When Ray is not running in this process yet, the backend joins ``address`` (a cluster, e.g.
``"auto"`` or ``"ray://head:10001"``) or, when None, starts a local instance without the
dashboard, and shuts it down when the sweep ends. An instance started before
(``ray.init(...)``) is used as it is and left running. Ray decides which addresses its own
services listen on (in ray 2.60 not only loopback; its token authentication is on by default).
"""

from __future__ import annotations

from typing import Any

from flipless.errors import MissingExtraError
from flipless.sweep.points import PointTask, run_point_logged


def _run_with_threads(task: PointTask, threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    return run_point_logged(task)


class RayBackend:
    """Runs point tasks on Ray; the interface of :class:`flipless.sweep.runner.Backend`."""

    def __init__(
        self, cpus_per_point: float = 1.0, address: str | None = None, threads: int | None = None
    ) -> None:
        try:
            import ray
        except ImportError as error:
            raise MissingExtraError(
                f"the ray backend needs ray, which could not be imported ({error}); install "
                "it with: pip install 'flipless[ray]', or use backend 'local'."
            ) from error
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address=address, include_dashboard=False)
        self._remote = ray.remote(num_cpus=cpus_per_point)(_run_with_threads)
        self._threads = threads or max(1, int(cpus_per_point))
        self._running: dict[Any, PointTask] = {}

    def submit(self, task: PointTask) -> None:
        self._running[self._remote.remote(task, self._threads)] = task

    def wait(self) -> list[tuple[PointTask, Any]]:
        done, _ = self._ray.wait(list(self._running), num_returns=1)
        results = []
        for reference in done:
            task = self._running.pop(reference)
            try:
                results.append((task, self._ray.get(reference)))
            except Exception as error:  # a RayTaskError is also an instance of the task's error
                results.append((task, error))
        return results

    def close(self) -> None:
        for reference in self._running:
            self._ray.cancel(reference)
        self._running.clear()
        if self._started:
            self._ray.shutdown()
