"""compare()'s top_k: anything but a whole number in range is an InputError naming top_k."""

from __future__ import annotations

import numpy as np
import pytest

from flipless import compare
from flipless.errors import InputError

SCORES = np.eye(3)
LABELS = np.array([0, 1, 2])


@pytest.mark.parametrize("top_k", ["a", "2", True, None, float("nan"), float("inf"), 2.5, 0, 3])
def test_a_bad_top_k_names_the_argument(top_k):
    with pytest.raises(InputError, match=r"top_k=.*expected an integer from 1 to 2 for 3 classes"):
        compare(SCORES, SCORES, LABELS, top_k=top_k)


def test_a_whole_float_is_a_top_k():
    comparison = compare(SCORES, SCORES, LABELS, top_k=2.0)
    assert comparison.top_k == 2 and comparison.accuracy_new == 1.0
