"""Distributed training helpers: one code path for one process and for a torchrun cluster.

Under ``torchrun`` (environment variables ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``) the
process group is started with ``nccl`` on GPUs and ``gloo`` on CPUs; multi-node runs go
through torchrun's rendezvous and need nothing more here. A global batch is cut into equal
per-process parts in rank order, so two processes see exactly the samples one process would
see in the same step.
"""

from __future__ import annotations

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
    started_here: bool  # this module started the process group (and so ends it)

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


def setup(device: str | torch.device | None = None) -> World:
    """Join (or start) the process group torchrun prepared; a plain process is world size 1."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = _pick_device(device, local_rank)
    if size == 1:
        return World(0, 1, 0, chosen, started_here=False)
    started = False
    if not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
        dist.init_process_group(backend=backend)
        started = True
    return World(dist.get_rank(), dist.get_world_size(), local_rank, chosen, started)


def teardown(world: World) -> None:
    """End the process group if :func:`setup` started it, once every process got here (a
    process that tears gloo down while another still talks to it can abort that one)."""
    if world.started_here and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


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
