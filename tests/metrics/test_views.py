"""The per-class, per-slice, flip-matrix and per-instance views on a hand-counted example."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flipless.errors import FliplessError
from flipless.metrics.comparison import compare
from flipless.metrics.counts import FlipCounts

# The 14-sample, 3-class example of test_counts.py, with two slice columns and string ids.
#
#   i   y  o  n   outcome    site   age     id
#   0   0  0  0   BC         north  <40     s00
#   1   0  1  0   PF         south  <40     s01
#   2   1  1  2   NF 1->2    north  <40     s02
#   3   1  2  1   PF         south  <40     s03
#   4   2  2  2   BC         north  <40     s04
#   5   2  0  1   BW diff    south  40-64   s05
#   6   0  0  2   NF 0->2    north  40-64   s06
#   7   1  1  1   BC         south  40-64   s07
#   8   2  1  1   BW same    north  40-64   s08
#   9   0  0  1   NF 0->1    south  40-64   s09
#  10   1  1  1   BC         north  65+     s10
#  11   2  0  0   BW same    south  65+     s11
#  12   0  1  2   BW diff    north  65+     s12
#  13   2  2  2   BC         south  65+     s13
LABELS = [0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 1, 2, 0, 2]
OLD = [0, 1, 1, 2, 2, 0, 0, 1, 1, 0, 1, 0, 1, 2]
NEW = [0, 0, 2, 1, 2, 1, 2, 1, 1, 1, 1, 0, 2, 2]
SITE = ["north", "south"] * 7
AGE = ["<40"] * 5 + ["40-64"] * 5 + ["65+"] * 4
IDS = [f"s{i:02d}" for i in range(14)]
NAMES = ["cat", "dog", "bird"]

NAN = float("nan")

# Per true class (columns: support, old_correct, new_correct, NF, PF,
#                 acc_old, acc_new, NFR, PFR, BTC, BEC, share of NF):
# class 0: i0 BC, i1 PF, i6 NF, i9 NF, i12 BWdiff -> 5, 3, 2, 2, 1,
#          3/5, 2/5, 2/5, 1/5, BTC 1/3 (i0 of i0,i6,i9), BEC 1/3 (i12 of i6,i9,i12), 2/3
# class 1: i2 NF, i3 PF, i7 BC, i10 BC -> 4, 3, 3, 1, 1,
#          3/4, 3/4, 1/4, 1/4, BTC 2/3, BEC 0/1 (only i2 is a new error), 1/3
# class 2: i4 BC, i5 BWdiff, i8 BWsame, i11 BWsame, i13 BC -> 5, 2, 2, 0, 0,
#          2/5, 2/5, 0, 0, BTC 2/2, BEC 3/3, 0
PER_CLASS = {
    "cat": (5, 3, 2, 2, 1, 3 / 5, 2 / 5, 2 / 5, 1 / 5, 1 / 3, 1 / 3, 2 / 3),
    "dog": (4, 3, 3, 1, 1, 3 / 4, 3 / 4, 1 / 4, 1 / 4, 2 / 3, 0.0, 1 / 3),
    "bird": (5, 2, 2, 0, 0, 2 / 5, 2 / 5, 0.0, 0.0, 1.0, 1.0, 0.0),
}
COLUMNS = (
    "support",
    "old_correct",
    "new_correct",
    "negative_flips",
    "positive_flips",
    "accuracy_old",
    "accuracy_new",
    "negative_flip_rate",
    "positive_flip_rate",
    "backward_trust_compatibility",
    "backward_error_compatibility",
    "share_of_negative_flips",
)

# Per site:
# north (even i): BC 0,4,10; NF 2,6; BWsame 8; BWdiff 12 -> 7, old 5, new 3, NF 2, PF 0,
#                 BTC 3/5, BEC 2/4 (8, 12 of 2, 6, 8, 12), share 2/3
# south (odd i):  PF 1,3; BWdiff 5; BC 7,13; NF 9; BWsame 11 -> 7, old 3, new 4, NF 1, PF 2,
#                 BTC 2/3, BEC 2/3 (5, 11 of 5, 9, 11), share 1/3
# Per age:
# <40   (0-4):  BC 0,4; PF 1,3; NF 2 -> 5, old 3, new 4, NF 1, PF 2, BTC 2/3, BEC 0/1, 1/3
# 40-64 (5-9):  BWdiff 5; NF 6,9; BC 7; BWsame 8 -> 5, old 3, new 1, NF 2, PF 0,
#               BTC 1/3, BEC 2/4, share 2/3
# 65+ (10-13):  BC 10,13; BWsame 11; BWdiff 12 -> 4, old 2, new 2, NF 0, PF 0, BTC 1, BEC 1, 0
PER_SLICE = {
    ("site", "north"): (7, 5, 3, 2, 0, 5 / 7, 3 / 7, 2 / 7, 0.0, 3 / 5, 2 / 4, 2 / 3),
    ("site", "south"): (7, 3, 4, 1, 2, 3 / 7, 4 / 7, 1 / 7, 2 / 7, 2 / 3, 2 / 3, 1 / 3),
    ("age", "<40"): (5, 3, 4, 1, 2, 3 / 5, 4 / 5, 1 / 5, 2 / 5, 2 / 3, 0.0, 1 / 3),
    ("age", "40-64"): (5, 3, 1, 2, 0, 3 / 5, 1 / 5, 2 / 5, 0.0, 1 / 3, 2 / 4, 2 / 3),
    ("age", "65+"): (4, 2, 2, 0, 0, 2 / 4, 2 / 4, 0.0, 0.0, 1.0, 1.0, 0.0),
}


@pytest.fixture(scope="module")
def example():
    return compare(
        np.array(OLD),
        np.array(NEW),
        np.array(LABELS),
        ids=IDS,
        class_names=NAMES,
        slices={"site": SITE, "age": AGE},
    )


def _assert_row(row: pd.Series, expected: tuple) -> None:
    for column, value in zip(COLUMNS, expected, strict=True):
        if np.isnan(value):
            assert np.isnan(row[column]), column
        else:
            assert row[column] == pytest.approx(value, rel=1e-12, abs=1e-15), column


def test_per_class_index_uses_class_names(example):
    frame = example.per_class()
    assert list(frame.index) == NAMES
    assert frame.index.name == "class"
    assert set(COLUMNS) <= set(frame.columns)


@pytest.mark.parametrize("name", NAMES)
def test_per_class_row_matches_hand_counts(example, name):
    _assert_row(example.per_class().loc[name], PER_CLASS[name])


def test_per_class_without_names_uses_class_numbers():
    frame = compare(OLD, NEW, LABELS).per_class()
    assert list(frame.index) == ["0", "1", "2"]
    _assert_row(frame.loc["1"], PER_CLASS["dog"])


def test_per_class_sums_to_dataset_counts(example):
    frame = example.per_class()
    assert frame["support"].sum() == 14
    assert frame["negative_flips"].sum() == example.negative_flips
    assert frame["positive_flips"].sum() == example.positive_flips


def test_per_class_of_an_unseen_class_is_nan():
    # class 3 never occurs as a label: support 0 and every rate undefined
    frame = compare([0, 1, 1], [0, 0, 3], [0, 1, 1], num_classes=4).per_class()
    row = frame.loc["3"]
    assert row["support"] == 0
    for column in COLUMNS[5:11]:
        assert np.isnan(row[column]), column
    assert frame.loc["1", "negative_flips"] == 2  # 1 -> 0 and 1 -> 3
    assert frame.loc["1", "share_of_negative_flips"] == 1.0


def test_per_class_share_is_nan_without_negative_flips():
    frame = compare([0, 1, 0], [0, 1, 1], [0, 1, 1]).per_class()
    assert frame["share_of_negative_flips"].isna().all()


def test_per_slice_lists_every_slice_and_group(example):
    frame = example.per_slice()
    assert isinstance(frame.index, pd.MultiIndex)
    assert list(frame.index.names) == ["slice", "group"]
    assert set(frame.index) == set(PER_SLICE)
    assert len(frame) == len(PER_SLICE)


@pytest.mark.parametrize("key", sorted(PER_SLICE))
def test_per_slice_row_matches_hand_counts(example, key):
    _assert_row(example.per_slice().loc[key], PER_SLICE[key])


@pytest.mark.parametrize("key", sorted(PER_SLICE))
def test_per_slice_by_name_matches_hand_counts(example, key):
    frame = example.per_slice(key[0])
    assert set(frame.index.get_level_values("slice")) == {key[0]}
    _assert_row(frame.loc[key], PER_SLICE[key])


def test_per_slice_group_counts_equal_the_slice_table(example):
    counts = example.slices["age"].counts("40-64")
    assert (counts.total, counts.negative_flips, counts.positive_flips) == (5, 2, 0)
    assert counts.both_wrong_same == 1 and counts.both_wrong_different == 1


def test_per_slice_from_a_dataframe_and_a_single_array():
    frame = pd.DataFrame({"site": SITE, "age": AGE})
    by_frame = compare(OLD, NEW, LABELS, slices=frame)
    _assert_row(by_frame.per_slice().loc[("age", "65+")], PER_SLICE[("age", "65+")])
    single = compare(OLD, NEW, LABELS, slices=np.array(SITE))
    assert list(single.slices) == ["slice"]
    _assert_row(single.per_slice().loc[("slice", "south")], PER_SLICE[("site", "south")])


def test_per_slice_with_integer_groups():
    groups = [3, 1] * 7  # the site column with 3 for north and 1 for south
    frame = compare(OLD, NEW, LABELS, slices={"g": groups}).per_slice("g")
    assert list(frame.index.get_level_values("group")) == [1, 3]
    _assert_row(frame.loc[("g", 3)], PER_SLICE[("site", "north")])


def test_per_slice_without_slices_is_empty():
    frame = compare(OLD, NEW, LABELS).per_slice()
    assert len(frame) == 0
    assert set(COLUMNS) <= set(frame.columns)


def test_per_slice_unknown_name_is_an_error(example):
    with pytest.raises(FliplessError, match="No slice named 'region'"):
        example.per_slice("region")


def test_per_slice_unknown_group_is_an_error(example):
    with pytest.raises(FliplessError, match="no group 'east'"):
        example.slices["site"].counts("east")


def test_flip_matrix_frame_has_named_axes(example):
    frame = example.flip_matrix_frame()
    assert list(frame.index) == NAMES and list(frame.columns) == NAMES
    assert frame.index.name == "old answer" and frame.columns.name == "new answer"
    # negative flips: i2 dog -> bird, i6 cat -> bird, i9 cat -> dog
    assert frame.loc["dog", "bird"] == 1
    assert frame.loc["cat", "bird"] == 1
    assert frame.loc["cat", "dog"] == 1
    assert frame.to_numpy().sum() == 3


def test_flip_matrix_is_the_same_without_instances(example):
    counts_only = compare(OLD, NEW, LABELS, keep_instances=False)
    np.testing.assert_array_equal(counts_only.flip_matrix, example.flip_matrix)


def test_negative_and_positive_flip_ids(example):
    assert list(example.negative_flip_ids()) == ["s02", "s06", "s09"]
    assert list(example.positive_flip_ids()) == ["s01", "s03"]


def test_flip_ids_default_to_row_numbers():
    c = compare(OLD, NEW, LABELS)
    assert list(c.negative_flip_ids()) == [2, 6, 9]
    assert list(c.positive_flip_ids()) == [1, 3]


def test_flip_ids_need_instances():
    c = compare(OLD, NEW, LABELS, keep_instances=False)
    assert c.negative_flips == 3
    with pytest.raises(FliplessError, match="counts only"):
        c.negative_flip_ids()


def test_instance_frame_negative_flips(example):
    frame = example.instance_frame("negative_flips")
    assert list(frame["id"]) == ["s02", "s06", "s09"]
    assert list(frame["label"]) == [1, 0, 0]
    assert list(frame["old_pred"]) == [1, 0, 0]
    assert list(frame["new_pred"]) == [2, 2, 1]
    assert list(frame["new_pred_name"]) == ["bird", "bird", "dog"]
    assert frame["old_correct"].all() and not frame["new_correct"].any()


def test_instance_frame_errors_lists_samples_not_right_in_both(example):
    frame = example.instance_frame("errors")
    # everything but the five both-correct samples 0, 4, 7, 10, 13
    assert list(frame["id"]) == [IDS[i] for i in (1, 2, 3, 5, 6, 8, 9, 11, 12)]


def test_instance_frame_all_flags(example):
    frame = example.instance_frame()
    assert len(frame) == 14
    assert list(frame.index[frame["positive_flip"]]) == [1, 3]
    assert list(frame.index[frame["negative_flip"]]) == [2, 6, 9]


def test_string_slice_with_missing_values_puts_them_last():
    # site: b, missing, a, b, missing; outcomes: i0 BC, i1 NF, i2 BC, i3 PF, i4 BW same
    c = compare(
        [0, 1, 1, 0, 1], [0, 0, 1, 1, 1], [0, 1, 1, 1, 0], slices={"s": ["b", None, "a", "b", None]}
    )
    table = c.slices["s"]
    assert table.groups[:2] == ("a", "b")
    assert len(table.groups) == 3 and pd.isna(table.groups[2])
    np.testing.assert_array_equal(table.outcomes.sum(axis=1), [1, 2, 2])
    assert table.counts("b").positive_flips == 1
    missing = FlipCounts.from_outcomes(table.outcomes[2])
    assert (missing.negative_flips, missing.both_wrong_same) == (1, 1)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(np.array([1.0, np.nan, 2.0, 1.0, np.nan]), id="float-array"),
        pytest.param([1.0, np.nan, 2.0, 1.0, np.nan], id="float-list"),
        pytest.param([1, None, 2, 1, None], id="int-list-with-none"),
    ],
)
def test_numeric_slice_with_missing_values_is_sorted_with_missing_last(values):
    # slice_table documents "Groups are sorted (missing values last)"
    c = compare([0, 1, 1, 0, 1], [0, 0, 1, 1, 1], [0, 1, 1, 1, 0], slices={"f": values})
    groups = c.slices["f"].groups
    assert groups[:2] == (1, 2), groups
    assert len(groups) == 3 and pd.isna(groups[2]), groups
    # i0 BC and i3 PF in group 1; i2 BC in group 2; i1 NF and i4 BW same in the missing group
    np.testing.assert_array_equal(c.slices["f"].outcomes.sum(axis=1), [2, 1, 2])
    assert c.slices["f"].counts(groups[0]).positive_flips == 1


def test_confidence_is_the_softmax_of_the_predicted_class():
    # logits [0, ln 3]: softmax (1/4, 3/4); logits [ln 4, 0, 0]: (4/6, 1/6, 1/6)
    old = np.array([[0.0, np.log(3.0), -50.0], [np.log(4.0), 0.0, 0.0]])
    c = compare(old, [1, 0], [1, 2])
    frame = c.instance_frame()
    np.testing.assert_allclose(frame["old_confidence"], [0.75, 4 / 6], rtol=1e-6)
    assert "new_confidence" not in frame


def test_probabilities_are_their_own_confidence():
    probs = np.array([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    frame = compare(probs, probs, [1, 2]).instance_frame()
    np.testing.assert_allclose(frame["new_confidence"], [0.5, 0.9], rtol=1e-6)


def test_top_regressions_are_the_most_confident_negative_flips():
    labels = [0, 0, 0, 0]
    old = [0, 0, 0, 1]
    # new model: wrong on 0, 1, 2 (negative flips) with confidences 0.6, 0.9, 0.7
    new = np.array([[0.4, 0.6], [0.1, 0.9], [0.3, 0.7], [0.5, 0.5]])
    frame = compare(old, new, labels, ids=["a", "b", "c", "d"]).top_regressions(2)
    assert list(frame["id"]) == ["b", "c"]
