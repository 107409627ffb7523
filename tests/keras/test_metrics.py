"""The stateful Keras flip metrics against flipless.compare and against hand counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import flipless  # noqa: E402
from flipless.errors import MismatchError  # noqa: E402
from flipless.keras import (  # noqa: E402
    BackwardErrorCompatibility,
    BackwardTrustCompatibility,
    NegativeFlipRate,
    PositiveFlipRate,
)

METRICS = {
    "negative_flip_rate": NegativeFlipRate,
    "positive_flip_rate": PositiveFlipRate,
    "backward_trust_compatibility": BackwardTrustCompatibility,
    "backward_error_compatibility": BackwardErrorCompatibility,
}


def result(metric) -> float:
    return float(keras.ops.convert_to_numpy(metric.result()))


def test_streamed_counts_and_rates_equal_compare_on_the_whole_set():
    rng = np.random.default_rng(11)
    size, classes = 1000, 5
    labels = rng.integers(0, classes, size)
    old = rng.normal(size=(size, classes)) + 1.5 * np.eye(classes)[labels]
    new = rng.normal(size=(size, classes)) + 1.8 * np.eye(classes)[labels]
    comparison = flipless.compare(old, new, labels)
    for name, cls in METRICS.items():
        metric = cls()
        assert metric.name == name
        for start in range(0, size, 128):  # uneven last batch
            rows = slice(start, start + 128)
            metric.update_state(labels[rows], new[rows], old[rows])
        counts = comparison.counts
        assert metric.counts() == {
            "both_right": counts.both_correct,
            "old_right_new_wrong": counts.negative_flips,
            "old_wrong_new_right": counts.positive_flips,
            "both_wrong": counts.both_wrong_same + counts.both_wrong_different,
        }
        assert result(metric) == pytest.approx(getattr(comparison, name), rel=1e-6)


def test_rates_by_hand_and_predicted_labels_work_like_scores():
    labels = np.array([0, 1, 2, 0, 1])
    old = np.array([0, 1, 2, 1, 0])  # right on 0, 1, 2
    new = np.array([0, 2, 2, 0, 0])  # right on 0, 2, 3
    expected = {
        "negative_flip_rate": 1 / 5,  # sample 1
        "positive_flip_rate": 1 / 5,  # sample 3
        "backward_trust_compatibility": 2 / 3,
        "backward_error_compatibility": 1 / 2,  # new wrong on 1, 4; both wrong on 4
    }
    scores = np.eye(3)
    for name, cls in METRICS.items():
        from_labels, from_scores = cls(), cls()
        from_labels.update_state(labels, new, old)
        from_scores.update_state(labels, scores[new], scores[old] * 0.3)
        assert result(from_labels) == pytest.approx(expected[name], rel=1e-7)
        assert from_scores.counts() == from_labels.counts()


def test_a_zero_denominator_is_nan_and_reset_starts_again():
    labels = np.array([0, 1])
    btc, bec = BackwardTrustCompatibility(), BackwardErrorCompatibility()
    btc.update_state(labels, np.array([0, 1]), np.array([1, 0]))  # the old model never right
    bec.update_state(labels, np.array([0, 1]), np.array([1, 0]))  # the new model never wrong
    assert math.isnan(result(btc)) and math.isnan(result(bec))
    assert btc.counts()["old_wrong_new_right"] == 2
    nfr = NegativeFlipRate()
    assert math.isnan(result(nfr))  # nothing seen yet
    nfr.update_state(labels, np.array([1, 1]), np.array([0, 1]))
    assert result(nfr) == 0.5
    nfr.reset_state()
    assert nfr.counts() == dict.fromkeys(nfr.counts(), 0)


def test_column_labels_are_accepted_and_mismatches_are_errors():
    metric = NegativeFlipRate()
    metric.update_state(np.array([[0], [1]]), np.array([0, 0]), np.array([0, 1]))
    assert result(metric) == 0.5
    with pytest.raises(MismatchError, match=r"labels \(3,\), new \(2,\) and old \(2,\)"):
        metric.update_state(np.array([0, 1, 2]), np.array([0, 0]), np.array([0, 1]))
    with pytest.raises(MismatchError, match=r"expected scores \[N, C\] or predicted labels \[N\]"):
        metric.update_state(np.array([0]), np.zeros((1, 2, 2)), np.array([0]))
