"""``compare`` against a naive per-sample reference written here, on random inputs.

The reference loops over the samples in plain Python, counts every outcome, and computes each
rate as an exact fraction; its argmax and top-k rules are written out from their definitions
(argmax: the first index of the largest score; top-k: fewer than k classes score strictly
higher than the true class).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flipless.errors import FliplessError
from flipless.metrics.comparison import compare
from flipless.metrics.counts import RATE_LABELS, FlipCounts

# Reference ---------------------------------------------------------------------------------


@dataclass
class RefCounts:
    total: int = 0
    both_correct: int = 0
    negative_flips: int = 0
    positive_flips: int = 0
    both_wrong_same: int = 0
    both_wrong_different: int = 0

    def add(self, old_ok: bool, new_ok: bool, same_answer: bool) -> None:
        self.total += 1
        if old_ok and new_ok:
            self.both_correct += 1
        elif old_ok:
            self.negative_flips += 1
        elif new_ok:
            self.positive_flips += 1
        elif same_answer:
            self.both_wrong_same += 1
        else:
            self.both_wrong_different += 1

    def ratios(self) -> dict[str, tuple[int, int]]:
        """Every rate as (numerator, denominator), straight from METHODS.md §1."""
        n = self.total
        old_ok = self.both_correct + self.negative_flips
        new_ok = self.both_correct + self.positive_flips
        old_wrong, new_wrong = n - old_ok, n - new_ok
        both_wrong = self.both_wrong_same + self.both_wrong_different
        return {
            "accuracy_old": (old_ok, n),
            "accuracy_new": (new_ok, n),
            "negative_flip_rate": (self.negative_flips, n),
            "positive_flip_rate": (self.positive_flips, n),
            "negative_flip_impact": (self.negative_flips, new_wrong),
            "positive_flip_impact": (self.positive_flips, new_ok),
            # NFR / (acc_old (1 - acc_new)) = (NF / n) / ((old_ok / n) (new_wrong / n))
            "relative_negative_flip_rate": (self.negative_flips * n, old_ok * new_wrong),
            "backward_trust_compatibility": (self.both_correct, old_ok),
            "backward_error_compatibility": (both_wrong, new_wrong),
            "backward_error_compatibility_bcml": (both_wrong, old_wrong),
        }

    def rates(self) -> dict[str, float]:
        out = {}
        for name, (num, den) in self.ratios().items():
            out[name] = math.nan if den == 0 else float(Fraction(num, den))
        out["accuracy_delta"] = (
            math.nan
            if self.total == 0
            else float(Fraction(self.positive_flips - self.negative_flips, self.total))
        )
        return out


@dataclass
class Reference:
    counts: RefCounts
    per_class: list[RefCounts]
    per_slice: dict[str, dict[object, RefCounts]]
    flip_matrix: list[list[int]]
    negative_ids: list[object] = field(default_factory=list)
    positive_ids: list[object] = field(default_factory=list)


def ref_argmax(row) -> int:
    best = 0
    for j in range(1, len(row)):
        if row[j] > row[best]:
            best = j
    return best


def ref_top_k_correct(row, label: int, k: int) -> bool:
    higher = 0
    for value in row:
        if value > row[label]:
            higher += 1
    return higher < k


def reference(old_pred, new_pred, labels, num_classes, old_ok, new_ok, slices, ids) -> Reference:
    total = RefCounts()
    per_class = [RefCounts() for _ in range(num_classes)]
    per_slice = {name: {} for name in slices}
    matrix = [[0] * num_classes for _ in range(num_classes)]
    negative_ids, positive_ids = [], []
    for i in range(len(labels)):
        o, n, y = int(old_pred[i]), int(new_pred[i]), int(labels[i])
        oc, nc = bool(old_ok[i]), bool(new_ok[i])
        total.add(oc, nc, o == n)
        per_class[y].add(oc, nc, o == n)
        for name, values in slices.items():
            per_slice[name].setdefault(values[i], RefCounts()).add(oc, nc, o == n)
        if oc and not nc:
            matrix[o][n] += 1
            negative_ids.append(ids[i])
        if nc and not oc:
            positive_ids.append(ids[i])
    return Reference(total, per_class, per_slice, matrix, negative_ids, positive_ids)


# Checks ------------------------------------------------------------------------------------

GROUP_COLUMNS = (
    "accuracy_old",
    "accuracy_new",
    "negative_flip_rate",
    "positive_flip_rate",
    "backward_trust_compatibility",
    "backward_error_compatibility",
)


def _same_float(got: float, expected: float) -> bool:
    if math.isnan(expected):
        return math.isnan(got)
    return math.isclose(got, expected, rel_tol=1e-12, abs_tol=1e-300)


def assert_counts(got: FlipCounts, expected: RefCounts) -> None:
    assert got.total == expected.total
    assert got.both_correct == expected.both_correct
    assert got.negative_flips == expected.negative_flips
    assert got.positive_flips == expected.positive_flips
    assert got.both_wrong_same == expected.both_wrong_same
    assert got.both_wrong_different == expected.both_wrong_different


def assert_rates(comparison, expected: RefCounts) -> None:
    rates = expected.rates()
    for name in RATE_LABELS:
        rate = comparison.rate(name)
        assert _same_float(rate.value, rates[name]), (name, rate.value, rates[name])
        assert _same_float(getattr(comparison, name), rates[name]), name
        if math.isnan(rates[name]):
            assert isinstance(rate.reason, str) and rate.reason, name
        else:
            assert rate.reason is None, name
    assert _same_float(comparison.accuracy_delta, rates["accuracy_delta"])


def assert_group_row(row: pd.Series, expected: RefCounts, all_negative: int) -> None:
    assert row["support"] == expected.total
    old_ok = expected.both_correct + expected.negative_flips
    new_ok = expected.both_correct + expected.positive_flips
    assert row["old_correct"] == old_ok
    assert row["new_correct"] == new_ok
    assert row["negative_flips"] == expected.negative_flips
    assert row["positive_flips"] == expected.positive_flips
    rates = expected.rates()
    for column in GROUP_COLUMNS:
        assert _same_float(float(row[column]), rates[column]), column
    share = math.nan if all_negative == 0 else expected.negative_flips / all_negative
    assert _same_float(float(row["share_of_negative_flips"]), share)


def assert_matches_reference(comparison, ref: Reference, class_labels: list[str]) -> None:
    assert_counts(comparison.counts, ref.counts)
    assert_rates(comparison, ref.counts)
    assert comparison.num_classes == len(ref.per_class)
    np.testing.assert_array_equal(comparison.flip_matrix, np.array(ref.flip_matrix))
    per_class = comparison.per_class()
    assert list(per_class.index) == class_labels
    for k, expected in enumerate(ref.per_class):
        assert_group_row(per_class.iloc[k], expected, ref.counts.negative_flips)
        assert_counts(FlipCounts.from_outcomes(comparison.class_outcomes[k]), expected)
    for name, groups in ref.per_slice.items():
        frame = comparison.per_slice(name)
        got_groups = list(frame.index.get_level_values("group"))
        assert sorted(got_groups) == sorted(groups)
        assert got_groups == sorted(groups)  # groups are listed in sorted order
        for group, expected in groups.items():
            assert_group_row(frame.loc[(name, group)], expected, ref.counts.negative_flips)
    if ref.per_slice:
        assert len(comparison.per_slice()) == sum(len(g) for g in ref.per_slice.values())


# Random inputs -----------------------------------------------------------------------------

SKILL = st.one_of(st.sampled_from([0.0, 0.5, 0.9, 1.0]), st.floats(0.0, 1.0))


@st.composite
def label_cases(draw):
    k = draw(st.integers(2, 12))
    n = draw(st.integers(1, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    seen = draw(st.integers(1, k))  # labels may use only some of the classes
    labels = rng.integers(0, seen, n)
    old = np.where(rng.random(n) < draw(SKILL), labels, rng.integers(0, k, n))
    # the new model repeats some of the old model's answers, so both-wrong-same occurs
    copy_old = rng.random(n) < draw(st.floats(0.0, 1.0))
    new = np.where(copy_old, old, rng.integers(0, k, n))
    new = np.where(rng.random(n) < draw(SKILL), labels, new)
    slices = {}
    for s in range(draw(st.integers(0, 2))):
        groups = draw(st.integers(1, 5))
        if draw(st.booleans()):
            pool = np.array(["red", "green", "blue", "a b", "Zed"][:groups], dtype=object)
            slices[f"s{s}"] = list(pool[rng.integers(0, groups, n)])
        else:
            slices[f"s{s}"] = list(rng.integers(-2, groups - 2, n).tolist())
    ids = None
    if draw(st.booleans()):
        ids = [f"id-{v}" for v in rng.permutation(3 * n)[:n]]
    pass_k = draw(st.booleans())
    return k, labels, old, new, slices, ids, pass_k


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=label_cases())
def test_label_predictions_match_the_reference(case):
    k, labels, old, new, slices, ids, pass_k = case
    if not pass_k:
        k = int(max(labels.max(), old.max(), new.max())) + 1
        if k < 2:
            with pytest.raises(FliplessError, match="at least 2"):
                compare(old, new, labels)
            return
    comparison = compare(
        old, new, labels, num_classes=k if pass_k else None, slices=slices or None, ids=ids
    )
    sample_ids = ids if ids is not None else list(range(len(labels)))
    ref = reference(old, new, labels, k, old == labels, new == labels, slices, sample_ids)
    assert_matches_reference(comparison, ref, [str(c) for c in range(k)])
    assert list(comparison.negative_flip_ids()) == ref.negative_ids
    assert list(comparison.positive_flip_ids()) == ref.positive_ids
    counts_only = compare(old, new, labels, num_classes=k, keep_instances=False)
    assert counts_only.counts == comparison.counts
    np.testing.assert_array_equal(counts_only.flip_matrix, np.array(ref.flip_matrix))


@st.composite
def score_cases(draw):
    k = draw(st.integers(2, 12))
    n = draw(st.integers(1, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    labels = rng.integers(0, k, n)
    tied = draw(st.booleans())  # integer-valued scores: many ties

    def logits(skill: float) -> np.ndarray:
        if tied:
            z = rng.integers(-2, 3, (n, k)).astype(np.float64)
            z[np.arange(n), labels] += rng.random(n) < skill
        else:
            z = rng.normal(0.0, 2.0, (n, k))
            z[np.arange(n), labels] += 3.0 * skill
        return z

    old, new = logits(draw(SKILL)), logits(draw(SKILL))
    dtype = draw(st.sampled_from([np.float64, np.float32, np.float16]))
    old, new = old.astype(dtype), new.astype(dtype)  # the reference reads the same values
    top_k = draw(st.integers(2, k - 1)) if k >= 3 and draw(st.booleans()) else 1
    slices = {"g": list(rng.choice(np.array(["x", "y", "z"], dtype=object), n))}
    return k, labels, old, new, top_k, slices


def _score_reference(k, labels, old, new, top_k, slices, ids) -> Reference:
    old_pred = [ref_argmax(row) for row in old.tolist()]
    new_pred = [ref_argmax(row) for row in new.tolist()]
    ys = labels.tolist()
    if top_k == 1:  # correct = the argmax (first index on ties) is the label
        old_ok = [p == y for p, y in zip(old_pred, ys, strict=True)]
        new_ok = [p == y for p, y in zip(new_pred, ys, strict=True)]
    else:
        old_ok = [ref_top_k_correct(r, y, top_k) for r, y in zip(old.tolist(), ys, strict=True)]
        new_ok = [ref_top_k_correct(r, y, top_k) for r, y in zip(new.tolist(), ys, strict=True)]
    return reference(old_pred, new_pred, ys, k, old_ok, new_ok, slices, ids), old_pred, new_pred


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=score_cases())
def test_logits_and_top_k_match_the_reference(case):
    k, labels, old, new, top_k, slices = case
    ids = [f"row{i}" for i in range(len(labels))][::-1]
    comparison = compare(old, new, labels, top_k=top_k, slices=slices, ids=ids)
    ref, old_pred, new_pred = _score_reference(k, labels, old, new, top_k, slices, ids)
    assert_matches_reference(comparison, ref, [str(c) for c in range(k)])
    assert list(comparison.negative_flip_ids()) == ref.negative_ids
    assert list(comparison.positive_flip_ids()) == ref.positive_ids
    frame = comparison.instance_frame()
    assert list(frame["old_pred"]) == old_pred
    assert list(frame["new_pred"]) == new_pred


@settings(max_examples=60, deadline=None)
@given(case=score_cases())
def test_logits_against_label_predictions_match_the_reference(case):
    k, labels, old, new, _, _ = case
    new_labels = np.array([ref_argmax(row) for row in new.tolist()])
    comparison = compare(old, new_labels, labels)
    ref, _, _ = _score_reference(k, labels, old, new, 1, {}, list(range(len(labels))))
    assert_matches_reference(comparison, ref, [str(c) for c in range(k)])


def test_argmax_takes_the_first_index_on_ties():
    # every row ties between classes 1 and 2 (and row 1 ties all three)
    old = np.array([[0.0, 5.0, 5.0], [1.0, 1.0, 1.0], [-1.0, 2.0, 2.0]])
    labels = np.array([1, 0, 2])
    c = compare(old, old, labels)
    assert list(c.instance_frame()["old_pred"]) == [1, 0, 1]
    assert c.accuracy_old == pytest.approx(2 / 3)


def test_top_k_counts_ties_as_correct():
    # top_k = 1 is the argmax (first index on ties); top_k >= 2 counts the classes that score
    # strictly higher than the true class.
    scores = np.array([[3.0, 3.0, 1.0, 0.0], [3.0, 2.0, 2.0, 2.0], [0.0, 1.0, 2.0, 3.0]])
    labels = np.array([1, 3, 1])
    # row 0: higher than class 1: none -> correct for k = 2 and 3
    # row 1: higher than class 3: class 0 only -> correct for k = 2, 3
    # row 2: higher than class 1: classes 2, 3 -> correct for k = 3 only
    assert compare(scores, scores, labels, top_k=2).accuracy_old == pytest.approx(2 / 3)
    assert compare(scores, scores, labels, top_k=3).accuracy_old == 1.0
    assert compare(scores, scores, labels).accuracy_old == 0.0


# More than one chunk of the internal pass ----------------------------------------------------


def _vectorised_reference(old_pred, new_pred, labels, k, old_ok, new_ok, groups, num_groups):
    same = old_pred == new_pred
    nf, pf = old_ok & ~new_ok, ~old_ok & new_ok
    both, bw = old_ok & new_ok, ~old_ok & ~new_ok
    counts = RefCounts(
        total=labels.size,
        both_correct=int(both.sum()),
        negative_flips=int(nf.sum()),
        positive_flips=int(pf.sum()),
        both_wrong_same=int((bw & same).sum()),
        both_wrong_different=int((bw & ~same).sum()),
    )

    def by(keys, size):
        return [
            RefCounts(
                total=int(np.sum(keys == g)),
                both_correct=int(np.sum(both & (keys == g))),
                negative_flips=int(np.sum(nf & (keys == g))),
                positive_flips=int(np.sum(pf & (keys == g))),
                both_wrong_same=int(np.sum(bw & same & (keys == g))),
                both_wrong_different=int(np.sum(bw & ~same & (keys == g))),
            )
            for g in range(size)
        ]

    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (old_pred[nf], new_pred[nf]), 1)
    return (
        Reference(counts, by(labels, k), {"g": dict(enumerate(by(groups, num_groups)))}, matrix),
        nf,
        pf,
    )


def _first_max_index(scores: np.ndarray) -> np.ndarray:
    k = scores.shape[1]
    is_max = scores == scores.max(axis=1, keepdims=True)
    return np.where(is_max, np.arange(k), k).min(axis=1)


def test_many_chunks_of_label_predictions():
    n, k = 200_000, 7
    rng = np.random.default_rng(1)
    labels = rng.integers(0, k, n)
    old = np.where(rng.random(n) < 0.8, labels, rng.integers(0, k, n))
    new = np.where(rng.random(n) < 0.85, labels, rng.integers(0, k, n))
    # a block of negative flips straddling the first chunk boundary (65536)
    old[65_000:66_000] = labels[65_000:66_000]
    new[65_000:66_000] = (labels[65_000:66_000] + 1) % k
    groups = rng.integers(0, 5, n)
    ids = np.arange(n) * 3 + 7
    comparison = compare(old, new, labels, slices={"g": groups}, ids=ids)
    ref, nf, pf = _vectorised_reference(
        old, new, labels, k, old == labels, new == labels, groups, 5
    )
    assert_matches_reference(comparison, ref, [str(c) for c in range(k)])
    np.testing.assert_array_equal(comparison.negative_flip_ids(), ids[nf])
    np.testing.assert_array_equal(comparison.positive_flip_ids(), ids[pf])
    counts_only = compare(old, new, labels, keep_instances=False)
    np.testing.assert_array_equal(counts_only.flip_matrix, ref.flip_matrix)


def test_many_chunks_of_logits_with_top_k():
    n, k, top_k = 200_000, 5, 2
    rng = np.random.default_rng(2)
    labels = rng.integers(0, k, n)
    old = rng.integers(-2, 3, (n, k)).astype(np.float32)  # many ties
    new = rng.normal(size=(n, k)).astype(np.float32)
    old[np.arange(n), labels] += 1
    new[np.arange(n), labels] += 1.5
    groups = rng.integers(0, 3, n)
    comparison = compare(old, new, labels, top_k=top_k, slices={"g": groups})

    def top_k_ok(scores):
        # the true class is correct iff its score reaches the k-th largest score of its row
        kth = np.sort(scores, axis=1)[:, k - top_k]
        return scores[np.arange(n), labels] >= kth

    old_pred, new_pred = _first_max_index(old), _first_max_index(new)
    ref, nf, _ = _vectorised_reference(
        old_pred, new_pred, labels, k, top_k_ok(old), top_k_ok(new), groups, 3
    )
    assert_matches_reference(comparison, ref, [str(c) for c in range(k)])
    np.testing.assert_array_equal(comparison.negative_flip_ids(), np.flatnonzero(nf))


def test_many_chunks_top_1_logits_argmax():
    n, k = 150_000, 4
    rng = np.random.default_rng(3)
    labels = rng.integers(0, k, n)
    old = rng.integers(0, 2, (n, k)).astype(np.float64)
    new = rng.integers(0, 3, (n, k)).astype(np.float64)
    comparison = compare(old, new, labels)
    old_pred, new_pred = _first_max_index(old), _first_max_index(new)
    ref, _, _ = _vectorised_reference(
        old_pred, new_pred, labels, k, old_pred == labels, new_pred == labels, labels, k
    )
    assert_counts(comparison.counts, ref.counts)
    np.testing.assert_array_equal(comparison.flip_matrix, ref.flip_matrix)
