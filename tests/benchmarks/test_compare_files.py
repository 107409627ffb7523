"""benchmarks/compare_files.py: the pandas baseline and flipless count the same on its files."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def benchmark():
    """The script, imported as it imports its helpers (its folder on the path)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("compare_files")
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.slow  # about 4 s on a loaded 2-core machine (first compare in the process)
def test_the_files_hold_shuffled_ids_and_both_stages_count_the_same(benchmark, tmp_path):
    old_path, new_path = benchmark.write_files(tmp_path, 3000, 5, seed=1)
    old, new = pd.read_parquet(old_path), pd.read_parquet(new_path)
    assert sorted(old["id"]) == sorted(new["id"]) == list(range(3000))
    assert not np.array_equal(old["id"], new["id"])  # shuffled differently
    baseline = benchmark.stage_baseline(old_path, new_path, 5)
    ours = benchmark.stage_flipless(old_path, new_path, 5)
    assert ours["counts"] == baseline["counts"] and ours["per_class"] == baseline["per_class"]
    # By hand from the files: the old model right where its prediction equals the label.
    joined = old.merge(new, on="id", suffixes=("_old", "_new"))
    old_right = joined["pred_old"] == joined["label_old"]
    new_right = joined["pred_new"] == joined["label_old"]
    assert baseline["counts"]["negative_flips"] == int((old_right & ~new_right).sum())
    assert baseline["counts"]["total"] == 3000
