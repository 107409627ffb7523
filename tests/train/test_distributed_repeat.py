"""`fit` many times in one torchrun job: one process group for all of them, no hang, and two
processes train what one process trains (issue 17 §2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("distributed_repeat_worker.py")
REPEATS = 20


@pytest.mark.distributed
@pytest.mark.timeout(200)
def test_old_new_and_a_sweep_point_twenty_times_in_one_torchrun_job(tmp_path, torchrun):
    out = tmp_path / "repeat.json"
    torchrun(WORKER, out, REPEATS, timeout=90)
    result = json.loads(out.read_text())
    assert result["world"] == 2
    assert result["fits"] == 3 * REPEATS
    # flipless started the group at the first fit and every later fit joined it
    assert result["group_after_every_fit"] and result["distinct_groups"] == 1
    assert result["owned_by_flipless"]  # and so ended at exit (the job exits cleanly)
    runs = result["runs"]
    assert len(runs) == REPEATS
    # every repetition trains the same models: nothing of one fit leaks into the next
    for run in runs[1:]:
        assert run == runs[0]
    spec: dict = {"__name__": "repeat_worker"}
    exec(WORKER.read_text(), spec)
    alone = spec["repetition"](spec["splits"](), [])
    for model in ("old", "new", "point"):
        np.testing.assert_allclose(runs[0][model], alone[model], rtol=1e-4, atol=1e-6)
