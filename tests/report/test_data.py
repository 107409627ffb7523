"""The report's numbers: every view of one comparison, checked against hand counts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

import flipless
from flipless.report.data import (
    comparison_payload,
    format_interval,
    format_value,
    kept_rows,
    slice_filter_column,
    summary,
    wilson_interval,
)

# 16 samples, 3 classes. Outcomes by sample (see the comments): both right 0 1 5 6 10 11;
# negative flips 2 (0→1), 7 (1→0), 12 (2→1); positive flips 3 8 9 13; both wrong with the same
# answer 4 14, with different answers 15.
LABELS = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2])
OLD = np.array([0, 0, 0, 1, 2, 1, 1, 1, 0, 2, 2, 2, 2, 1, 0, 0])
NEW = np.array([0, 0, 1, 0, 2, 1, 1, 0, 1, 1, 2, 2, 1, 2, 0, 1])
REGION = np.array(["north"] * 8 + ["south"] * 8)
NAMES = ["cat", "dog", "owl"]


def scores(predicted: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """Logits whose argmax is ``predicted``, with a per-sample margin (confidences differ)."""
    logits = np.zeros((predicted.shape[0], 3))
    logits[np.arange(predicted.shape[0]), predicted] = margin
    return logits


@pytest.fixture
def comparison():
    margin = np.linspace(0.5, 3.0, 16)
    return flipless.compare(
        scores(OLD, margin),
        scores(NEW, margin[::-1]),
        LABELS,
        ids=[f"s{i}" for i in range(16)],
        class_names=NAMES,
        slices={"region": REGION},
    )


def test_summary_values_equal_hand_counts(comparison):
    rows = {row["key"]: row for row in summary(comparison)["rows"]}
    expected = {
        "accuracy_old": (9 / 16, "56.25 %", "9 / 16"),
        "accuracy_new": (10 / 16, "62.50 %", "10 / 16"),
        "accuracy_delta": (1 / 16, "+6.25 pp", "4 fixed − 3 broken"),
        "negative_flip_rate": (3 / 16, "18.75 %", "3 / 16"),
        "positive_flip_rate": (4 / 16, "25.00 %", "4 / 16"),
        "negative_flip_impact": (3 / 6, "50.00 %", "3 / 6"),
        "relative_negative_flip_rate": (48 / 54, "0.889", "NFR / (acc old · (1 − acc new))"),
        "backward_trust_compatibility": (6 / 9, "66.67 %", "6 / 9"),
        "backward_error_compatibility": (3 / 6, "50.00 %", "3 / 6"),
    }
    assert list(rows) == list(expected)
    for key, (value, display, counts) in expected.items():
        assert rows[key]["value"] == pytest.approx(value, abs=1e-15), key
        assert rows[key]["display"] == display and rows[key]["counts"] == counts, key


def test_intervals_are_the_bootstrap_where_it_exists_and_wilson_elsewhere(comparison):
    rows = {row["key"]: row for row in summary(comparison)["rows"]}
    bootstrap = comparison.significance.intervals["negative_flip_rate"]
    assert (rows["negative_flip_rate"]["low"], rows["negative_flip_rate"]["high"]) == (
        bootstrap.low,
        bootstrap.high,
    )
    assert rows["negative_flip_rate"]["interval_method"].startswith("bootstrap, 2000 resamples")
    # Wilson by hand for 9 / 16 at 95 %: (p + z²/2n ± z √(p(1−p)/n + z²/4n²)) / (1 + z²/n).
    z, n, p = stats.norm.ppf(0.975), 16, 9 / 16
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert rows["accuracy_old"]["low"] == pytest.approx(centre - half, rel=1e-12)
    assert rows["accuracy_old"]["high"] == pytest.approx(centre + half, rel=1e-12)
    assert rows["accuracy_old"]["interval_method"] == "Wilson score"
    assert rows["negative_flip_impact"]["low"] == pytest.approx(wilson_interval(3, 6, 0.95)[0])
    assert summary(comparison)["mcnemar"]["p_value"] == 1.0  # 2·P[Bin(7, ½) ≤ 3] = 2 · 64/128
    assert summary(comparison)["mcnemar"]["display"] == "1"


def test_undefined_rates_say_why_and_stay_json():
    perfect = flipless.compare(np.array([0, 1, 1]), np.array([0, 1, 0]), np.array([0, 1, 0]))
    rows = {row["key"]: row for row in summary(perfect)["rows"]}
    bec = rows["backward_error_compatibility"]
    assert bec["value"] is None and bec["display"] == "n/a"
    assert bec["counts"] == "the new model made no errors"
    json.dumps(summary(perfect), allow_nan=False)  # NaN never reaches the page
    assert wilson_interval(0, 0, 0.95) == (pytest.approx(math.nan, nan_ok=True),) * 2


def test_formats():
    assert format_value(0.03254, "percent") == "3.25 %"
    assert format_value(-0.0125, "points") == "-1.25 pp"
    assert format_value(float("nan"), "ratio") == "n/a"
    assert format_interval(0.01, 0.02, "percent") == "[1.00, 2.00] %"
    assert format_interval(None, 0.2, "ratio") == ""


def test_views_of_the_comparison(comparison):
    payload = comparison_payload(comparison, "old → new", {"region": list(REGION)}, None)
    venn = payload["venn"]
    assert (venn["old_errors"], venn["new_errors"], venn["common"]) == (7, 6, 3)
    assert (venn["progress"], venn["regress"]) == (4, 3)
    assert (venn["common_same"], venn["common_different"]) == (2, 1)
    classes = payload["classes"]
    assert [c["name"] for c in classes] == NAMES
    assert [c["negative_flips"] for c in classes] == [1, 1, 1]
    assert [c["positive_flips"] for c in classes] == [1, 2, 1]
    assert [c["support"] for c in classes] == [5, 5, 6]
    assert [c["share_of_negative_flips"] for c in classes] == pytest.approx([1 / 3] * 3)
    assert classes[1]["accuracy_old"] == pytest.approx(3 / 5)  # dog: samples 5, 6, 7 right
    assert payload["flip_matrix"] == [[0, 1, 0], [1, 0, 0], [0, 1, 0]]
    (region,) = payload["slices"]
    assert region["filterable"] is True
    assert [(g["key"], g["negative_flips"]) for g in region["groups"]] == [
        ("north", 2),
        ("south", 1),
    ]
    rows = payload["instances"]
    assert rows["total"] == rows["embedded"] == 16 and rows["row"] == list(range(16))
    assert rows["code"][2] & 3 == 1 and rows["code"][4] == 4 and rows["code"][15] == 0
    # Confidence of the argmax: softmax of (margin, 0, 0), kept to 4 decimals.
    margin = np.linspace(0.5, 3.0, 16)[0]
    expected = math.exp(margin) / (math.exp(margin) + 2)
    assert rows["old_confidence"][0] == round(expected, 4)
    json.dumps(payload, allow_nan=False)


def test_a_slice_filters_only_when_the_metadata_reproduces_its_counts(comparison):
    assert slice_filter_column(comparison, "region", {"region": list(REGION)})
    swapped = list(REGION[::-1])  # same groups, other rows: the counts differ
    assert not slice_filter_column(comparison, "region", {"region": swapped})
    assert not slice_filter_column(comparison, "region", {"other": list(REGION)})
    assert not slice_filter_column(comparison, "region", {"region": ["east"] * 16})


def test_counts_only_comparisons_have_no_rows():
    counted = flipless.compare(OLD, NEW, LABELS, keep_instances=False)
    payload = comparison_payload(counted, "c", {}, None)
    assert payload["instances"] is None
    assert payload["flip_matrix"] == [[0, 1, 0], [1, 0, 0], [0, 1, 0]]


def test_capped_rows_keep_negative_flips_first_then_positive_then_both_wrong():
    codes = np.array([3, 0, 1, 2, 3, 1, 4, 2], dtype=np.uint8)  # & 3: 3 0 1 2 3 1 0 2
    assert kept_rows(codes, None).tolist() == list(range(8))
    assert kept_rows(codes, 2).tolist() == [2, 5]  # the negative flips
    assert kept_rows(codes, 4).tolist() == [2, 3, 5, 7]  # … and the positive flips
    assert kept_rows(codes, 5).tolist() == [1, 2, 3, 5, 7]  # … and the first both-wrong row
    assert kept_rows(codes, 100).tolist() == list(range(8))
