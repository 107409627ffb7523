"""The process group's lifetime (flipless.train.distributed): started once by flipless and
kept, a caller's group used and left alone, ended by shutdown() or at exit.

These run in one process: ``WORLD_SIZE=2`` sends :func:`setup` down the torchrun path, and
``init_process_group`` is made to build a real one-process gloo group (no peer to wait for).
Several processes: tests/train/test_distributed_repeat.py.
"""

from __future__ import annotations

import pytest
import torch.distributed as dist

from flipless.errors import InputError
from flipless.train import distributed


@pytest.fixture
def new_process(monkeypatch) -> list:
    """The module's state as in a fresh torchrun process; yields what atexit registered."""
    if dist.is_initialized():
        pytest.skip("a process group is already running in this test process")
    monkeypatch.setattr(distributed, "_started_group", None)
    monkeypatch.setattr(distributed, "_shutdown_registered", False)
    monkeypatch.setattr(distributed, "_ended", False)
    registered: list = []
    monkeypatch.setattr(distributed.atexit, "register", registered.append)
    monkeypatch.setattr(dist, "init_process_group", one_process_group)
    monkeypatch.setenv("WORLD_SIZE", "2")
    yield registered
    if dist.is_initialized():
        dist.destroy_process_group()


REAL_INIT = dist.init_process_group


def one_process_group(backend: str = "gloo") -> None:
    REAL_INIT(backend, store=dist.HashStore(), rank=0, world_size=1)


def test_flipless_starts_the_group_once_and_shutdown_ends_it(new_process):
    first = distributed.setup("cpu")
    group = dist.group.WORLD
    assert distributed.owns_process_group() and dist.get_backend() == "gloo"
    again = distributed.setup("cpu")  # a second fit joins the same group
    assert dist.group.WORLD is group and again == first
    assert new_process == [distributed.shutdown]  # registered once, for the exit
    distributed.shutdown()
    assert not dist.is_initialized() and not distributed.owns_process_group()
    distributed.shutdown()  # nothing left to end: does nothing
    with pytest.raises(InputError, match=r"shutdown\(\) already ended this job's process group"):
        distributed.setup("cpu")


def test_a_group_the_caller_started_is_used_and_left_alone(new_process):
    one_process_group()
    group = dist.group.WORLD
    distributed.setup("cpu")
    assert dist.group.WORLD is group and not distributed.owns_process_group()
    distributed.shutdown()
    assert dist.is_initialized() and dist.group.WORLD is group
    assert new_process == []


def test_a_cpu_fit_in_an_nccl_group_is_refused(new_process, monkeypatch):
    one_process_group()
    monkeypatch.setattr(dist, "get_backend", lambda *group: "nccl")
    with pytest.raises(InputError, match=r"device='cpu' but this job's process group runs nccl"):
        distributed.setup("cpu")
