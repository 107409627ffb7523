"""What ``compare`` accepts (numpy, lists, torch, pandas) and how it rejects bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from flipless.errors import FliplessError, InputError, MismatchError
from flipless.metrics.comparison import compare

# Accepted inputs ---------------------------------------------------------------------------

K = 4
RNG = np.random.default_rng(7)
N = 64
LABELS = RNG.integers(0, K, N)
# scores that are multiples of 1/4 in [-4, 4): exact in float16 and bfloat16, so every dtype
# has the same argmax (ties included)
OLD_SCORES = RNG.integers(-16, 16, (N, K)) / 4.0
NEW_SCORES = RNG.integers(-16, 16, (N, K)) / 4.0
OLD_SCORES[np.arange(N), LABELS] += 1.0
NEW_SCORES[np.arange(N), LABELS] += 1.5
OLD_PRED = OLD_SCORES.argmax(axis=1)
NEW_PRED = NEW_SCORES.argmax(axis=1)


def _hand_counts(old_pred, new_pred, labels):
    old_ok, new_ok = old_pred == labels, new_pred == labels
    return (
        int(np.sum(old_ok & new_ok)),
        int(np.sum(old_ok & ~new_ok)),
        int(np.sum(~old_ok & new_ok)),
        int(np.sum(~old_ok & ~new_ok & (old_pred == new_pred))),
        int(np.sum(~old_ok & ~new_ok & (old_pred != new_pred))),
    )


EXPECTED = _hand_counts(OLD_PRED, NEW_PRED, LABELS)


def _summary(comparison):
    c = comparison.counts
    return (
        c.both_correct,
        c.negative_flips,
        c.positive_flips,
        c.both_wrong_same,
        c.both_wrong_different,
    )


@pytest.fixture(scope="module")
def baseline():
    return compare(OLD_PRED, NEW_PRED, LABELS)


def _assert_same(comparison, baseline) -> None:
    assert _summary(comparison) == EXPECTED
    np.testing.assert_array_equal(comparison.class_outcomes, baseline.class_outcomes)
    np.testing.assert_array_equal(comparison.flip_matrix, baseline.flip_matrix)
    np.testing.assert_array_equal(comparison.negative_flip_ids(), baseline.negative_flip_ids())


def test_baseline_counts_match_the_hand_count(baseline):
    assert _summary(baseline) == EXPECTED
    assert EXPECTED[1] > 0 and EXPECTED[2] > 0  # the data has flips both ways


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda a: a, id="numpy-int64"),
        pytest.param(lambda a: a.astype(np.int32), id="numpy-int32"),
        pytest.param(lambda a: a.astype(np.uint8), id="numpy-uint8"),
        pytest.param(lambda a: a.tolist(), id="list"),
        pytest.param(lambda a: tuple(a.tolist()), id="tuple"),
        pytest.param(torch.as_tensor, id="torch-int64"),
        pytest.param(lambda a: torch.as_tensor(a, dtype=torch.int32), id="torch-int32"),
        pytest.param(pd.Series, id="pandas"),
        pytest.param(lambda a: pd.Series(a, index=np.arange(len(a))[::-1]), id="pandas-index"),
        pytest.param(lambda a: a.astype(np.float64), id="numpy-integer-valued-float"),
        pytest.param(lambda a: [float(v) for v in a], id="list-integer-valued-float"),
        pytest.param(lambda a: torch.as_tensor(a, dtype=torch.float32), id="torch-float-labels"),
        pytest.param(lambda a: pd.Series(a.astype(float)), id="pandas-float-labels"),
    ],
)
def test_label_inputs_of_every_type_agree(baseline, convert):
    comparison = compare(convert(OLD_PRED), convert(NEW_PRED), convert(LABELS))
    _assert_same(comparison, baseline)


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda a: a, id="numpy-float64"),
        pytest.param(lambda a: a.astype(np.float32), id="numpy-float32"),
        pytest.param(lambda a: a.astype(np.float16), id="numpy-float16"),
        pytest.param(lambda a: a.tolist(), id="list-of-lists"),
        pytest.param(lambda a: torch.as_tensor(a, dtype=torch.float32), id="torch-float32"),
        pytest.param(lambda a: torch.as_tensor(a, dtype=torch.float16), id="torch-float16"),
        pytest.param(lambda a: torch.as_tensor(a, dtype=torch.bfloat16), id="torch-bfloat16"),
        pytest.param(
            lambda a: torch.as_tensor(a, dtype=torch.float32).requires_grad_(),
            id="torch-requires-grad",
        ),
        pytest.param(pd.DataFrame, id="pandas-frame"),
    ],
)
def test_logit_inputs_of_every_type_agree(baseline, convert):
    comparison = compare(convert(OLD_SCORES), convert(NEW_SCORES), LABELS)
    _assert_same(comparison, baseline)


def test_mixed_logits_and_labels_agree(baseline):
    _assert_same(compare(OLD_SCORES, NEW_PRED, LABELS), baseline)
    _assert_same(compare(OLD_PRED, torch.as_tensor(NEW_SCORES), pd.Series(LABELS)), baseline)


def test_probabilities_give_the_same_counts_as_logits(baseline):
    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    _assert_same(compare(softmax(OLD_SCORES), softmax(NEW_SCORES), LABELS), baseline)


def test_boolean_labels_are_binary_classes():
    c = compare([True, False, True], [True, True, False], np.array([True, False, False]))
    # i0 both right, i1 negative flip, i2 positive flip
    assert (c.both_correct, c.negative_flips, c.positive_flips) == (1, 1, 1)


def test_slices_and_ids_accept_tensors_and_series():
    groups = LABELS % 2
    by_list = compare(OLD_PRED, NEW_PRED, LABELS, slices={"g": groups.tolist()})
    by_tensor = compare(
        OLD_PRED, NEW_PRED, LABELS, slices={"g": torch.as_tensor(groups)}, ids=torch.arange(N)
    )
    by_series = compare(OLD_PRED, NEW_PRED, LABELS, slices=pd.Series(groups, name="g"))
    assert by_list.per_slice("g").equals(by_tensor.per_slice("g"))
    assert by_list.per_slice("g").to_numpy().tolist() == by_series.per_slice().to_numpy().tolist()
    broken = np.flatnonzero((OLD_PRED == LABELS) & (NEW_PRED != LABELS))
    assert list(by_tensor.negative_flip_ids()) == list(broken)


def test_num_classes_larger_than_the_data_is_allowed():
    c = compare([0, 1], [1, 1], [0, 1], num_classes=5)
    assert c.num_classes == 5
    assert c.flip_matrix.shape == (5, 5)
    assert c.flip_matrix[0, 1] == 1


# Bad input ---------------------------------------------------------------------------------


def test_different_lengths():
    with pytest.raises(FliplessError, match="different lengths"):
        compare([0, 1, 2], [0, 1], [0, 1, 2])


def test_labels_shorter_than_predictions():
    with pytest.raises(MismatchError, match="labels has 2"):
        compare([0, 1, 2], [0, 1, 2], [0, 1])


def test_logits_with_different_row_counts():
    with pytest.raises(FliplessError, match="different lengths"):
        compare(np.zeros((3, 3)), np.zeros((4, 3)), [0, 1, 2])


def test_ids_of_the_wrong_length():
    with pytest.raises(FliplessError, match="ids has 2"):
        compare([0, 1, 2], [0, 1, 2], [0, 1, 2], ids=["a", "b"])


def test_slice_of_the_wrong_length():
    with pytest.raises(FliplessError, match="different lengths"):
        compare([0, 1, 2], [0, 1, 2], [0, 1, 2], slices={"site": ["a", "b"]})


def test_labels_out_of_range_for_num_classes():
    with pytest.raises(
        FliplessError, match=r"labels holds 1 value\(s\) ≥ 3 .*num_classes gives 3 classes"
    ):
        compare([0, 1, 2], [0, 1, 2], [0, 1, 3], num_classes=3)


def test_predictions_out_of_range_for_num_classes():
    with pytest.raises(FliplessError, match=r"new predictions .*num_classes gives 3 classes"):
        compare([0, 1, 2], [0, 5, 2], [0, 1, 2], num_classes=3)


def test_labels_out_of_range_for_the_logits_width():
    with pytest.raises(FliplessError, match="the width of the scores gives 3 classes"):
        compare(np.zeros((2, 3)), np.zeros((2, 3)), [0, 3])


def test_negative_labels():
    with pytest.raises(FliplessError, match="negative value"):
        compare([0, 1, 1], [0, 1, 1], [0, -1, 1])


def test_ignore_index_labels_are_named_in_the_message():
    with pytest.raises(FliplessError, match="-100"):
        compare([0, 1, 1], [0, 1, 1], [0, -100, 1])


def test_negative_predictions():
    with pytest.raises(FliplessError, match="old predictions holds 1 negative"):
        compare([0, -2, 1], [0, 1, 1], [0, 1, 1])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_logits(bad):
    old = np.zeros((3, 2))
    old[1, 0] = bad
    with pytest.raises(FliplessError, match="NaN or infinite"):
        compare(old, np.zeros((3, 2)), [0, 1, 0])


def test_non_finite_logits_in_a_torch_half_tensor():
    new = torch.zeros((3, 2), dtype=torch.float16)
    new[2, 1] = float("inf")
    with pytest.raises(FliplessError, match=r"NaN or infinite.*rows 2"):
        compare(np.zeros((3, 2)), new, [0, 1, 0])


def test_non_integer_labels():
    with pytest.raises(FliplessError, match="non-integer"):
        compare([0, 1, 1], [0, 1, 1], [0.0, 1.5, 1.0])


def test_nan_labels():
    with pytest.raises(FliplessError, match="non-integer"):
        compare([0, 1, 1], [0, 1, 1], [0.0, np.nan, 1.0])


def test_non_integer_predictions():
    with pytest.raises(FliplessError, match="new predictions holds 1 non-integer"):
        compare([0, 1, 1], [0, 0.5, 1], [0, 1, 1])


def test_string_labels():
    with pytest.raises(FliplessError, match="expected integer class indices"):
        compare([0, 1], [0, 1], ["cat", "dog"])


def test_missing_labels_in_a_nullable_series():
    with pytest.raises(FliplessError):
        compare([0, 1, 1], [0, 1, 1], pd.Series([0, None, 1], dtype="Int64"))


def test_none_input():
    with pytest.raises(FliplessError, match="None"):
        compare(None, [0, 1], [0, 1])


def test_ragged_logits():
    with pytest.raises(FliplessError, match="expected"):
        compare([[0.0, 1.0], [1.0]], [0, 1], [0, 1])


def test_empty_input():
    with pytest.raises(FliplessError, match="empty"):
        compare([], [], [])


def test_empty_logits():
    with pytest.raises(FliplessError, match="empty"):
        compare(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, dtype=np.int64))


def test_one_class_problem_without_num_classes():
    with pytest.raises(FliplessError, match="at least 2 classes"):
        compare([0, 0, 0], [0, 0, 0], [0, 0, 0])


def test_num_classes_one():
    with pytest.raises(FliplessError, match="at least 2 classes"):
        compare([0, 0, 0], [0, 0, 0], [0, 0, 0], num_classes=1)


def test_num_classes_not_an_integer():
    with pytest.raises(FliplessError, match=r"2\.5"):
        compare([0, 1], [0, 1], [0, 1], num_classes=2.5)


def test_single_score_column():
    with pytest.raises(FliplessError, match="C ≥ 2"):
        compare(np.zeros((3, 1)), np.zeros((3, 1)), [0, 0, 0])


def test_logits_of_different_widths():
    with pytest.raises(MismatchError, match="different widths"):
        compare(np.zeros((5, 3)), np.zeros((5, 4)), [0, 1, 2, 0, 1])


def test_logits_width_differs_from_num_classes():
    with pytest.raises(MismatchError, match="4 columns but num_classes gives 3 classes"):
        compare(np.zeros((2, 4)), np.zeros((2, 4)), [0, 1], num_classes=3)


@pytest.mark.parametrize("top_k", [0, -1, 4, 5, 1.5])
def test_top_k_out_of_range(top_k):
    scores = np.zeros((2, 4))
    with pytest.raises(FliplessError, match=r"top_k=.*expected an integer from 1 to 3"):
        compare(scores, scores, [0, 1], top_k=top_k)


def test_top_k_with_label_predictions():
    with pytest.raises(FliplessError, match="needs scores"):
        compare([0, 1, 2], [0, 1, 2], [0, 1, 2], top_k=2)


def test_top_k_with_one_model_giving_labels():
    with pytest.raises(FliplessError, match="needs scores"):
        compare(np.zeros((3, 3)), [0, 1, 2], [0, 1, 2], top_k=2)


def test_duplicate_ids():
    with pytest.raises(FliplessError, match=r"more than once \('b'\)"):
        compare([0, 1, 2], [0, 1, 2], [0, 1, 2], ids=["a", "b", "b"])


def test_class_names_disagree_with_num_classes():
    with pytest.raises(MismatchError, match="2 class names but num_classes=3"):
        compare([0, 1, 2], [0, 1, 2], [0, 1, 2], num_classes=3, class_names=["a", "b"])


def test_class_names_fewer_than_the_logits_width():
    with pytest.raises(MismatchError, match="3"):
        compare(np.zeros((2, 4)), np.zeros((2, 4)), [0, 1], class_names=["a", "b", "c"])


def test_class_names_fewer_than_the_classes_seen():
    with pytest.raises(FliplessError, match="class_names gives 2 classes"):
        compare([0, 1, 2], [0, 1, 2], [0, 1, 2], class_names=["a", "b"])


def test_duplicate_class_names():
    with pytest.raises(FliplessError, match="duplicates"):
        compare([0, 1], [0, 1], [0, 1], class_names=["a", "a"])


def test_three_dimensional_predictions():
    with pytest.raises(FliplessError, match=r"shape \(2, 3, 4\).*\[N\] or scores \[N, C\]"):
        compare(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), [0, 1])


def test_two_dimensional_labels():
    with pytest.raises(FliplessError, match="1-D array of class indices"):
        compare([0, 1], [0, 1], [[0], [1]])


def test_three_dimensional_labels():
    with pytest.raises(FliplessError, match=r"shape \(1, 2, 1\)"):
        compare([0, 1], [0, 1], np.zeros((1, 2, 1), dtype=np.int64))


def test_two_dimensional_ids():
    with pytest.raises(FliplessError, match="one value per sample"):
        compare([0, 1], [0, 1], [0, 1], ids=np.zeros((2, 2)))


def test_input_errors_are_value_errors():
    # callers that catch ValueError keep working
    with pytest.raises(ValueError):
        compare([0, 1, 2], [0, 1], [0, 1, 2])
    assert issubclass(MismatchError, InputError)


def test_strided_and_fortran_ordered_inputs_agree(baseline):
    doubled = np.repeat(LABELS, 2)  # every second element is the original
    fortran_old = np.asfortranarray(OLD_SCORES)
    transposed_new = np.ascontiguousarray(NEW_SCORES.T).T  # a non-contiguous [N, K] view
    assert not transposed_new.flags.c_contiguous
    comparison = compare(fortran_old, transposed_new, doubled[::2])
    _assert_same(comparison, baseline)
    _assert_same(compare(np.repeat(OLD_PRED, 3)[::3], NEW_PRED[::-1][::-1], LABELS), baseline)


def test_read_only_inputs_agree(baseline):
    arrays = [OLD_PRED.copy(), NEW_PRED.copy(), LABELS.copy()]
    for array in arrays:
        array.setflags(write=False)
    _assert_same(compare(*arrays), baseline)


def test_integer_scores_are_scores():
    # a 2-D integer array is scores: argmax per row (first index on ties)
    scores = np.array([[3, 1, 0], [0, 2, 2], [1, 0, 5], [4, 4, 0]])
    c = compare(scores, scores, [0, 2, 2, 1])
    assert list(c.instance_frame()["old_pred"]) == [0, 1, 2, 0]
    assert c.accuracy_old == 0.5
