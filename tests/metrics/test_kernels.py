"""The compiled kernels: their threading layer, and concurrent callers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from flipless import compare


def test_kernels_run_on_the_workqueue_layer_not_openmp():
    """Regression: after numba's OpenMP pool ran once, every torch backward pass in the process
    was 40–70× slower. flipless picks the workqueue layer unless the user chose a layer."""
    script = textwrap.dedent(
        """
        import numba, numpy as np, flipless
        flipless.compare(np.array([0, 1, 2]), np.array([0, 2, 2]), np.array([0, 1, 1]))
        print(numba.threading_layer())
        """
    )
    environment = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment, check=True
    )
    assert run.stdout.strip() == "workqueue"
    chosen = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**environment, "NUMBA_THREADING_LAYER": "omp"},
        check=True,
    )
    assert chosen.stdout.strip() == "omp"  # the user's choice is kept


def test_concurrent_callers_get_their_own_correct_counts():
    """The workqueue layer allows one parallel launch at a time: callers from several threads
    are serialised, not crashed, and each gets its own counts."""
    generator = np.random.default_rng(0)
    cases = []
    for _ in range(16):
        labels = generator.integers(0, 5, 20_000)
        old = np.where(generator.random(20_000) < 0.8, labels, generator.integers(0, 5, 20_000))
        new = np.where(generator.random(20_000) < 0.85, labels, generator.integers(0, 5, 20_000))
        cases.append((old, new, labels))
    with ThreadPoolExecutor(max_workers=4) as pool:
        flips = list(pool.map(lambda case: compare(*case).negative_flips, cases))
    expected = [int(((o == y) & (n != y)).sum()) for o, n, y in cases]
    assert flips == expected
