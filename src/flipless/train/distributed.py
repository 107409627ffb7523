"""Distributed training helpers: one code path for one process and for a torchrun cluster.

Under ``torchrun`` (environment variables ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``) the
process group is started with ``nccl`` on GPUs and ``gloo`` on CPUs; multi-node runs go
through torchrun's rendezvous and need nothing more here. A global batch is cut into equal
per-process parts in rank order, so two processes see exactly the samples one process would
see in the same step.

The process group lives as long as the job, not as long as one ``fit``: the first
:func:`setup` under torchrun starts it, and every later ``fit`` in the process (old model, new
model, sweep points, …) joins that same group. A group the caller started (``init_process_group``
before the first ``fit``) is used as it is and left to the caller to end. A group flipless
started ends at interpreter exit (``atexit``), or earlier with :func:`shutdown`, once every
process gets there; never while some other code may still be using it. flipless starts a group
at most once per process, and a ``fit`` after :func:`shutdown` is refused: a default group
started again in the same torchrun job (torch 2.13, gloo) hung in its first collective in one
of three tries here, as a second ``fit`` did now and then when each ``fit`` started and ended
its own group.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from flipless.errors import InputError


@dataclass(frozen=True)
class World:
    """Where this process stands: its rank, how many there are, and its device."""

    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files, logs and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _pick_device(device: str | torch.device | None, local_rank: int) -> torch.device:
    if device is not None:
        chosen = torch.device(device)
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device={device!r} but CUDA is not available here; use 'cpu'.")
        if chosen.type == "cuda" and chosen.index is None:
            chosen = torch.device("cuda", local_rank)
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


#: The default process group that :func:`setup` started (None: none, or the caller's).
_started_group: Any = None
_shutdown_registered = False
_ended = False  # shutdown() ended the group flipless started


def setup(device: str | torch.device | None = None) -> World:
    """Join the process group of this torchrun job, starting it on first use (``nccl`` on
    GPUs, ``gloo`` on CPUs; ended by :func:`shutdown` or at exit); a plain process is world
    size 1 and starts nothing."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = _pick_device(device, local_rank)
    if size == 1:
        return World(0, 1, 0, chosen)
    if not dist.is_initialized():
        if _ended:
            raise InputError(
                "flipless.train.distributed.shutdown() already ended this job's process "
                "group; expected every fit of a torchrun job before shutdown(). Call shutdown() "
                "after the last fit, or not at all (the group ends at exit)."
            )
        _start_group(chosen)
    elif chosen.type == "cpu" and dist.get_backend() == "nccl":
        raise InputError(
            "device='cpu' but this job's process group runs nccl, which moves only CUDA "
            "tensors; expected a CUDA device for every fit of the job, or a group started "
            "with a CPU backend (init_process_group('cpu:gloo,cuda:nccl'))."
        )
    return World(dist.get_rank(), dist.get_world_size(), local_rank, chosen)


def _start_group(device: torch.device) -> None:
    global _started_group, _shutdown_registered
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    _started_group = dist.group.WORLD
    if not _shutdown_registered:
        atexit.register(shutdown)
        _shutdown_registered = True


def owns_process_group() -> bool:
    """Whether the running default process group is one :func:`setup` started."""
    return (
        _started_group is not None and dist.is_initialized() and dist.group.WORLD is _started_group
    )


def shutdown() -> None:
    """End the process group flipless started, once every process got here (a process that
    tears gloo down while another still talks to it can abort that one).

    Called at interpreter exit; call it earlier to free the group, or before starting one of
    your own. Every process of the job must call it (it waits at a barrier). Does nothing
    when there is no group, or when the caller started it: that group is the caller's to end.
    A later ``fit`` under torchrun is refused (module docstring).
    """
    global _started_group, _ended
    if owns_process_group():
        dist.barrier()
        dist.destroy_process_group()
        _ended = True
    _started_group = None


def gather_objects(world: World, value: Any) -> list[Any]:
    """Every process's ``value``, in rank order (a list of one without a process group)."""
    if not world.distributed:
        return [value]
    values: list[Any] = [None] * world.size
    dist.all_gather_object(values, value)
    return values


def broadcast_object(world: World, value: Any) -> Any:
    """Rank 0's ``value`` on every process."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()
