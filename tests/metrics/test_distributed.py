"""Two processes under torchrun (gloo) give the single-process numbers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from flipless import compare

WORKER = Path(__file__).with_name("distributed_worker.py")


def _worker_module():
    spec = importlib.util.spec_from_file_location("distributed_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.distributed
@pytest.mark.timeout(180)
def test_two_process_gloo_metric_equals_one_process(tmp_path, torchrun):
    out = tmp_path / "result.json"
    torchrun(WORKER, out, timeout=170)
    result = json.loads(out.read_text())
    assert result["world"] == 2

    old, new, labels, groups = _worker_module().shared_data()
    one_shot = compare(old, new, labels, slices={"group": groups})
    np.testing.assert_array_equal(result["class_outcomes"], one_shot.class_outcomes)
    np.testing.assert_array_equal(result["flip_matrix"], one_shot.flip_matrix)
    np.testing.assert_array_equal(result["slice_outcomes"], one_shot.slices["group"].outcomes)
    assert result["negative_flip_rate"] == one_shot.negative_flip_rate
