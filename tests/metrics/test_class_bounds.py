"""Class indices far beyond the data: renumbered by the classes present, bounded, checked.

Before the fix, one stray prediction of 5,000,000 in a 50-row file made compare() allocate
per-class arrays of five million rows (and per_class() never finished).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from flipless import compare
from flipless.errors import InputError
from flipless.metrics.outputs import DENSE_CLASS_LIMIT, MAX_PRESENT_CLASSES

LABELS = np.arange(50) % 3
STRAY = 5_000_000


def test_a_stray_index_is_renumbered_and_memory_follows_the_rows():
    new = LABELS.copy()
    new[0] = STRAY  # sample 0: the old model is right, the new one answers a far class
    tracemalloc.start()
    comparison = compare(LABELS, new, LABELS)
    frame = comparison.per_class()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * 2**20  # five million classes × 7 int64 counts alone would be 280 MB
    assert comparison.class_names == ("0", "1", "2", str(STRAY))
    assert list(frame.index) == ["0", "1", "2", str(STRAY)]
    # by hand: 1 negative flip of 50 (sample 0, true class 0 of 17 samples)
    assert comparison.negative_flips == 1 and comparison.counts.total == 50
    assert frame.loc["0", "negative_flips"] == 1 and frame.loc["0", "support"] == 17
    assert frame.loc[str(STRAY), "support"] == 0
    regressions = comparison.top_regressions(1)
    assert regressions["new_pred"].tolist() == [3]  # its index among the classes present


def test_indices_up_to_the_dense_limit_keep_their_numbering():
    new = LABELS.copy()
    new[0] = DENSE_CLASS_LIMIT - 1
    comparison = compare(LABELS, new, LABELS)
    assert comparison.num_classes == DENSE_CLASS_LIMIT and comparison.class_names is None


def test_class_names_bound_the_indices():
    new = LABELS.copy()
    new[0] = STRAY
    with pytest.raises(InputError, match="new predictions"):
        compare(LABELS, new, LABELS, class_names=["a", "b", "c"])


def test_too_many_distinct_classes_is_a_clear_error():
    rows = MAX_PRESENT_CLASSES + 1
    labels = np.arange(rows) * 2  # sparse: largest index 2·rows, all distinct
    with pytest.raises(InputError, match="distinct class indices"):
        compare(labels, labels, labels)
