"""Shared test helpers (pytest loads this file; test modules cannot import each other)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def torchrun() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run a script under ``torchrun --standalone`` on the CPU; fail with its stderr if it fails.

    Each process gets one thread (``OMP_NUM_THREADS=1``), as torchrun sets by default.
    """

    def run(
        script: Path, *args: object, processes: int = 2, timeout: float = 230
    ) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={processes}",
                str(script),
                *map(str, args),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        return completed

    return run
