"""Gate rules on a hand-made comparison."""

from __future__ import annotations

import numpy as np
import pytest

from flipless import FliplessError, compare
from flipless.gate import evaluate_gate

LABELS = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
OLD = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 1, 2, 0])
NEW = np.array([0, 1, 2, 0, 1, 2, 1, 2, 0, 0, 1, 2])
SITE = np.array(["a"] * 6 + ["b"] * 5 + ["c"])


@pytest.fixture
def comparison():
    return compare(OLD, NEW, LABELS, slices={"site": SITE})


def test_class_rule_checks_each_true_class(comparison):
    # negative flips: sample 6 (class 0), 7 (class 1), 8 (class 2): 1 of 4 in each class
    verdict = evaluate_gate(comparison, max_class_nfr=0.2)
    assert [c.scope for c in verdict.violations] == ["class 0", "class 1", "class 2"]
    assert all(c.value == pytest.approx(0.25) for c in verdict.checks)
    assert evaluate_gate(comparison, max_class_nfr=0.25).passed


def test_small_slices_are_skipped_and_listed(comparison):
    verdict = evaluate_gate(comparison, max_slice_nfr=0.5, min_slice_size=2)
    assert verdict.skipped == ["slice site=c (1 samples < 2)"]
    assert {c.scope for c in verdict.checks} == {"slice site=a", "slice site=b"}
    # site b: samples 6-10, negative flips 6, 7, 8 → 3 / 5
    b = next(c for c in verdict.checks if c.scope == "slice site=b")
    assert b.value == pytest.approx(0.6) and not b.passed


def test_significance_rule_fails_only_a_significant_regression():
    labels = np.zeros(40, dtype=int)
    old = np.zeros(40, dtype=int)
    new = np.r_[np.ones(12, dtype=int), np.zeros(28, dtype=int)]  # 12 broken, 0 fixed
    verdict = evaluate_gate(compare(old, new, labels, num_classes=2), significance=0.05)
    # exact McNemar: p = 2 · 0.5¹² = 0.000488 < 0.05 and more broken than fixed
    assert not verdict.passed
    assert verdict.checks[0].value == pytest.approx(2 * 0.5**12)
    fixed = evaluate_gate(compare(new, old, labels, num_classes=2), significance=0.05)
    assert fixed.passed  # significant, but an improvement


@pytest.mark.parametrize(
    ("rules", "match"),
    [
        ({}, "No gate rule"),
        ({"max_nfr": 1.5}, "fraction"),
        ({"significance": 0.0}, "level"),
        ({"min_accuracy_gain": 3.0}, "difference of accuracies"),
    ],
)
def test_bad_rules(comparison, rules, match):
    with pytest.raises(FliplessError, match=match):
        evaluate_gate(comparison, **rules)
