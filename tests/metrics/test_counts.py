"""Every rate on small examples counted by hand, the undefined (NaN) cases, and the equivalence
of a comparison built by ``compare`` with one built from the same counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flipless.errors import FliplessError
from flipless.metrics.comparison import Comparison, compare
from flipless.metrics.counts import RATE_LABELS, FlipCounts

# A 14-sample, 3-class example. Per sample (y = label, o = old answer, n = new answer):
#
#   i   y  o  n   outcome
#   0   0  0  0   both correct
#   1   0  1  0   positive flip
#   2   1  1  2   negative flip       (old answer 1 -> new answer 2)
#   3   1  2  1   positive flip
#   4   2  2  2   both correct
#   5   2  0  1   both wrong, different answers
#   6   0  0  2   negative flip       (0 -> 2)
#   7   1  1  1   both correct
#   8   2  1  1   both wrong, same answer
#   9   0  0  1   negative flip       (0 -> 1)
#  10   1  1  1   both correct
#  11   2  0  0   both wrong, same answer
#  12   0  1  2   both wrong, different answers
#  13   2  2  2   both correct
#
# Counts: both correct 5 (0, 4, 7, 10, 13), NF 3 (2, 6, 9), PF 2 (1, 3),
# both wrong same 2 (8, 11), both wrong different 2 (5, 12); N = 14.
# old correct = 5 + 3 = 8, new correct = 5 + 2 = 7, new wrong = 7, old wrong = 6,
# both wrong = 4.
LABELS = [0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 1, 2, 0, 2]
OLD = [0, 1, 1, 2, 2, 0, 0, 1, 1, 0, 1, 0, 1, 2]
NEW = [0, 0, 2, 1, 2, 1, 2, 1, 1, 1, 1, 0, 2, 2]

HAND_RATES = {
    "accuracy_old": 8 / 14,
    "accuracy_new": 7 / 14,
    "negative_flip_rate": 3 / 14,
    "positive_flip_rate": 2 / 14,
    "negative_flip_impact": 3 / 7,  # NF / new wrong
    "positive_flip_impact": 2 / 7,  # PF / new correct
    # NFR / (acc_old (1 - acc_new)) = (3/14) / ((8/14)(7/14)) = 3*14 / (8*7) = 0.75
    "relative_negative_flip_rate": 0.75,
    "backward_trust_compatibility": 5 / 8,  # both correct / old correct
    "backward_error_compatibility": 4 / 7,  # both wrong / new wrong (KDD 2020)
    "backward_error_compatibility_bcml": 4 / 6,  # both wrong / old wrong (BCML code)
}


@pytest.fixture(scope="module")
def example() -> Comparison:
    return compare(np.array(OLD), np.array(NEW), np.array(LABELS))


def test_hand_example_counts(example):
    assert example.total == 14
    assert example.both_correct == 5
    assert example.negative_flips == 3
    assert example.positive_flips == 2
    assert example.both_wrong_same == 2
    assert example.both_wrong_different == 2
    assert example.old_correct == 8
    assert example.new_correct == 7
    assert example.old_wrong == 6
    assert example.new_wrong == 7
    assert example.both_wrong == 4


@pytest.mark.parametrize("name", sorted(HAND_RATES))
def test_hand_example_rate_property(example, name):
    value = getattr(example, name)
    assert isinstance(value, float)
    assert value == pytest.approx(HAND_RATES[name], rel=1e-15, abs=0)


@pytest.mark.parametrize("name", sorted(HAND_RATES))
def test_hand_example_rate_object_is_defined(example, name):
    rate = example.rate(name)
    assert rate.name == name
    assert rate.value == pytest.approx(HAND_RATES[name], rel=1e-15, abs=0)
    assert rate.defined
    assert rate.reason is None


@pytest.mark.parametrize(
    ("name", "numerator", "denominator"),
    [
        ("accuracy_old", 8, 14),
        ("accuracy_new", 7, 14),
        ("negative_flip_rate", 3, 14),
        ("positive_flip_rate", 2, 14),
        ("negative_flip_impact", 3, 7),
        ("positive_flip_impact", 2, 7),
        ("backward_trust_compatibility", 5, 8),
        ("backward_error_compatibility", 4, 7),
        ("backward_error_compatibility_bcml", 4, 6),
    ],
)
def test_hand_example_rate_numerator_and_denominator(example, name, numerator, denominator):
    rate = example.rate(name)
    assert (rate.numerator, rate.denominator) == (numerator, denominator)


def test_hand_example_accuracy_delta(example):
    # (7 - 8) / 14 = (PF - NF) / N = (2 - 3) / 14
    assert example.accuracy_delta == pytest.approx(-1 / 14, rel=1e-15)


def test_hand_example_rates_dict_lists_every_rate(example):
    rates = example.counts.rates()
    assert list(rates) == list(RATE_LABELS)
    assert set(rates) == set(HAND_RATES)
    for name, rate in rates.items():
        assert rate.value == pytest.approx(HAND_RATES[name], rel=1e-15)


def test_hand_example_bec_is_not_the_bcml_variant(example):
    # the paper's BEC divides by the new model's errors (7), BCML's code by the old one's (6)
    assert example.backward_error_compatibility != example.backward_error_compatibility_bcml
    assert example.rate("backward_error_compatibility").denominator == example.new_wrong
    assert example.rate("backward_error_compatibility_bcml").denominator == example.old_wrong


def test_both_wrong_same_is_separated_from_both_wrong_different():
    # y: 0 0 0 1 ; old: 1 2 1 0 ; new: 1 1 2 0
    # i0 both wrong with the same answer 1; i1 both wrong, 2 vs 1; i2 both wrong, 1 vs 2;
    # i3 both wrong with the same answer 0.
    c = compare([1, 2, 1, 0], [1, 1, 2, 0], [0, 0, 0, 1], num_classes=3)
    assert c.both_wrong_same == 2
    assert c.both_wrong_different == 2
    assert c.both_correct == c.negative_flips == c.positive_flips == 0


def test_hand_example_flip_matrix(example):
    # negative flips: i2 (1 -> 2), i6 (0 -> 2), i9 (0 -> 1)
    expected = np.zeros((3, 3), dtype=np.int64)
    expected[1, 2] = 1
    expected[0, 2] = 1
    expected[0, 1] = 1
    np.testing.assert_array_equal(example.flip_matrix, expected)
    assert example.flip_matrix.sum() == example.negative_flips


def test_flip_matrix_counts_repeated_transitions():
    # four negative flips of class 2, three of them answered 0 by the new model, one 1;
    # one negative flip of class 0 answered 2; one positive flip (not in the matrix).
    labels = [2, 2, 2, 2, 0, 1]
    old = [2, 2, 2, 2, 0, 0]
    new = [0, 0, 1, 0, 2, 1]
    c = compare(old, new, labels)
    expected = np.zeros((3, 3), dtype=np.int64)
    expected[2, 0] = 3
    expected[2, 1] = 1
    expected[0, 2] = 1
    np.testing.assert_array_equal(c.flip_matrix, expected)


# Undefined rates -------------------------------------------------------------------------------


def _assert_undefined(comparison, name: str) -> None:
    rate = comparison.rate(name)
    assert math.isnan(rate.value), name
    assert math.isnan(getattr(comparison, name)), name
    assert isinstance(rate.reason, str), name
    assert rate.reason.strip(), name
    assert not rate.defined
    assert rate.denominator == 0


def test_old_model_never_right_makes_btc_undefined():
    # old is always wrong; new is right on samples 0 and 1
    c = compare([1, 0, 1, 0], [0, 1, 1, 0], [0, 1, 0, 1])
    assert c.accuracy_old == 0.0
    _assert_undefined(c, "backward_trust_compatibility")
    _assert_undefined(c, "relative_negative_flip_rate")  # acc_old = 0
    assert "old" in c.rate("backward_trust_compatibility").reason
    # the others are defined: 2 PF of 4, new wrong 2 of which both wrong 2
    assert c.positive_flip_rate == 0.5
    assert c.negative_flip_rate == 0.0
    assert c.backward_error_compatibility == 1.0
    assert c.negative_flip_impact == 0.0


def test_new_model_without_errors_makes_nfi_bec_and_relative_nfr_undefined():
    labels = [0, 1, 2, 1, 0]
    old = [0, 2, 2, 1, 1]  # wrong on samples 1 and 4
    c = compare(old, labels, labels)
    for name in (
        "negative_flip_impact",
        "backward_error_compatibility",
        "relative_negative_flip_rate",
    ):
        _assert_undefined(c, name)
    assert "new" in c.rate("backward_error_compatibility").reason
    assert c.positive_flip_rate == 2 / 5
    assert c.positive_flip_impact == 2 / 5
    assert c.backward_trust_compatibility == 1.0
    assert c.backward_error_compatibility_bcml == 0.0  # 0 both wrong / 2 old wrong


def test_old_model_without_errors_makes_bcml_bec_undefined():
    labels = [0, 1, 2, 1, 0, 2]
    new = [0, 0, 2, 1, 1, 1]  # wrong on samples 1, 4, 5
    c = compare(labels, new, labels)
    _assert_undefined(c, "backward_error_compatibility_bcml")
    assert "old" in c.rate("backward_error_compatibility_bcml").reason
    assert c.negative_flip_rate == 0.5
    assert c.negative_flip_impact == 1.0
    assert c.backward_error_compatibility == 0.0
    assert c.backward_trust_compatibility == 0.5
    # NFR / (1 * 0.5) = 1
    assert c.relative_negative_flip_rate == pytest.approx(1.0)


def test_new_model_never_right_makes_pfi_undefined():
    labels = [0, 1, 1]
    c = compare([0, 0, 1], [1, 0, 0], labels)
    _assert_undefined(c, "positive_flip_impact")
    assert c.accuracy_new == 0.0
    assert c.negative_flip_impact == pytest.approx(2 / 3)


def test_perfect_agreement_on_the_truth():
    labels = [0, 1, 2, 3, 2, 1]
    c = compare(labels, labels, labels)
    assert c.accuracy_old == c.accuracy_new == 1.0
    assert c.accuracy_delta == 0.0
    assert c.negative_flip_rate == c.positive_flip_rate == 0.0
    assert c.backward_trust_compatibility == 1.0
    assert c.positive_flip_impact == 0.0
    for name in (
        "negative_flip_impact",
        "backward_error_compatibility",
        "backward_error_compatibility_bcml",
        "relative_negative_flip_rate",
    ):
        _assert_undefined(c, name)
    assert c.flip_matrix.sum() == 0


def test_identical_models_with_errors():
    labels = [0, 1, 2, 0, 1]
    preds = [0, 2, 2, 1, 0]  # wrong on 1, 3, 4 with the same answer in both models
    c = compare(preds, preds, labels)
    assert c.negative_flips == c.positive_flips == 0
    assert c.both_wrong_same == 3
    assert c.both_wrong_different == 0
    assert c.backward_trust_compatibility == 1.0
    assert c.backward_error_compatibility == 1.0
    assert c.backward_error_compatibility_bcml == 1.0
    assert c.negative_flip_impact == 0.0
    assert c.relative_negative_flip_rate == 0.0


def test_everything_flipped_negative():
    labels = [0, 1, 2, 1]
    c = compare(labels, [1, 2, 0, 0], labels)
    assert c.negative_flips == 4
    assert c.negative_flip_rate == 1.0
    assert c.accuracy_delta == -1.0
    assert c.negative_flip_impact == 1.0
    assert c.backward_trust_compatibility == 0.0
    assert c.backward_error_compatibility == 0.0
    assert c.relative_negative_flip_rate == 1.0  # 1 / (1 * 1)
    _assert_undefined(c, "positive_flip_impact")
    _assert_undefined(c, "backward_error_compatibility_bcml")
    expected = np.zeros((3, 3), dtype=np.int64)
    expected[0, 1] = expected[1, 2] = expected[2, 0] = expected[1, 0] = 1
    np.testing.assert_array_equal(c.flip_matrix, expected)


def test_everything_flipped_positive():
    labels = [0, 1, 2, 1]
    c = compare([1, 2, 0, 0], labels, labels)
    assert c.positive_flips == 4
    assert c.positive_flip_rate == 1.0
    assert c.accuracy_delta == 1.0
    assert c.positive_flip_impact == 1.0
    assert c.negative_flip_rate == 0.0
    _assert_undefined(c, "backward_trust_compatibility")
    _assert_undefined(c, "negative_flip_impact")
    _assert_undefined(c, "backward_error_compatibility")
    _assert_undefined(c, "relative_negative_flip_rate")
    assert c.backward_error_compatibility_bcml == 0.0
    assert c.flip_matrix.sum() == 0


# FlipCounts directly ---------------------------------------------------------------------------


def test_flip_counts_rates_from_hand_counts():
    counts = FlipCounts(
        total=14,
        both_correct=5,
        negative_flips=3,
        positive_flips=2,
        both_wrong_same=2,
        both_wrong_different=2,
    )
    for name, expected in HAND_RATES.items():
        assert counts.rate(name).value == pytest.approx(expected, rel=1e-15), name
    assert counts.accuracy_delta == pytest.approx(-1 / 14)


def test_flip_counts_from_all_eight_outcome_codes():
    # code = old correct | new correct << 1 | same answer << 2. With top-k correctness every
    # code can occur (e.g. 0b011: both right in the top k, with different argmaxes).
    outcomes = np.array([6, 3, 2, 1, 4, 7, 9, 5], dtype=np.int64)
    counts = FlipCounts.from_outcomes(outcomes)
    assert counts.total == 37
    assert counts.both_correct == 1 + 5  # codes 3, 7
    assert counts.negative_flips == 3 + 7  # codes 1, 5
    assert counts.positive_flips == 2 + 9  # codes 2, 6
    assert counts.both_wrong_same == 4  # code 4
    assert counts.both_wrong_different == 6  # code 0


def test_flip_counts_reject_inconsistent_totals():
    with pytest.raises(FliplessError, match="add up to the total"):
        FlipCounts(10, 5, 3, 2, 1, 0)
    with pytest.raises(FliplessError, match="non-negative"):
        FlipCounts(5, 6, -1, 0, 0, 0)


def test_unknown_rate_name_is_an_error(example):
    with pytest.raises(FliplessError, match="Unknown rate 'nfr'"):
        example.rate("nfr")


def test_empty_counts_give_nan_with_a_reason():
    counts = FlipCounts(0, 0, 0, 0, 0, 0)
    for name in RATE_LABELS:
        rate = counts.rate(name)
        assert math.isnan(rate.value)
        assert rate.reason
    assert math.isnan(counts.accuracy_delta)


# A comparison from counts equals one from compare() ---------------------------------------------


def _hand_class_outcomes() -> np.ndarray:
    """The [K, 8] outcome table of the 14-sample example, filled in by hand per sample."""
    table = np.zeros((3, 8), dtype=np.int64)
    # code bits: 1 old correct, 2 new correct, 4 same answer
    both_correct, nf, pf, bw_same, bw_diff = 0b111, 0b001, 0b010, 0b100, 0b000
    for label, code in [
        (0, both_correct),  # i0
        (0, pf),  # i1
        (1, nf),  # i2
        (1, pf),  # i3
        (2, both_correct),  # i4
        (2, bw_diff),  # i5
        (0, nf),  # i6
        (1, both_correct),  # i7
        (2, bw_same),  # i8
        (0, nf),  # i9
        (1, both_correct),  # i10
        (2, bw_same),  # i11
        (0, bw_diff),  # i12
        (2, both_correct),  # i13
    ]:
        table[label, code] += 1
    return table


def _hand_flip_matrix() -> np.ndarray:
    matrix = np.zeros((3, 3), dtype=np.int64)
    matrix[1, 2] = matrix[0, 2] = matrix[0, 1] = 1
    return matrix


def test_compare_produces_the_hand_outcome_table(example):
    np.testing.assert_array_equal(example.class_outcomes, _hand_class_outcomes())


def test_comparison_from_counts_has_identical_rates(example):
    built = Comparison(class_outcomes=_hand_class_outcomes(), flip_matrix=_hand_flip_matrix())
    counts = FlipCounts(14, 5, 3, 2, 2, 2)
    assert built.counts == example.counts == counts
    for name in RATE_LABELS:
        from_compare, from_table, from_counts = (
            example.rate(name),
            built.rate(name),
            counts.rate(name),
        )
        assert from_compare == from_table == from_counts, name
        assert getattr(built, name) == getattr(example, name) == getattr(counts, name)
    assert built.accuracy_delta == example.accuracy_delta == counts.accuracy_delta


def test_comparison_from_counts_has_identical_views(example):
    built = Comparison(class_outcomes=_hand_class_outcomes(), flip_matrix=_hand_flip_matrix())
    assert built.per_class().equals(example.per_class())
    assert built.flip_matrix_frame().equals(example.flip_matrix_frame())


def test_comparison_from_counts_has_identical_significance(example):
    built = Comparison(class_outcomes=_hand_class_outcomes(), flip_matrix=_hand_flip_matrix())
    assert built.significance == example.significance


def test_comparison_rejects_a_flip_matrix_of_the_wrong_shape():
    with pytest.raises(FliplessError, match=r"\(2, 2\)"):
        Comparison(class_outcomes=np.zeros((3, 8), np.int64), flip_matrix=np.zeros((2, 2)))


def test_comparison_rejects_an_outcome_table_of_the_wrong_shape():
    with pytest.raises(FliplessError, match=r"\(3, 7\)"):
        Comparison(class_outcomes=np.zeros((3, 7), np.int64), flip_matrix=np.zeros((3, 3)))


def test_comparison_needs_a_flip_matrix_or_instances():
    with pytest.raises(FliplessError, match="flip matrix"):
        Comparison(class_outcomes=_hand_class_outcomes())
