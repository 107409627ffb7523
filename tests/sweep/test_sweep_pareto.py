"""Pareto fronts, selection rules and mean ± std over seeds, on hand-made records."""

from __future__ import annotations

import math

import pytest

from flipless.errors import InputError
from flipless.merge.selection import WeightRule
from flipless.sweep.pareto import best_so_far, pareto_front, select_point, summarise
from flipless.sweep.store import RECORD_SCHEMA

KINDS = {"cross-entropy": ("loss", "weight"), "fd-kl": ("loss", "weight")}
KINDS |= {"bcwi": ("interpolation", "old_weight")}


def record(method, strength, seed, accuracy, nfr, btc=0.9, test_accuracy=None):
    kind, strength_name = KINDS[method]
    dev = {
        "accuracy": accuracy,
        "old_accuracy": 0.8,
        "negative_flip_rate": nfr,
        "positive_flip_rate": 0.1,
        "relative_negative_flip_rate": None,  # undefined: stored as null
        "backward_trust_compatibility": btc,
        "backward_error_compatibility": 0.5,
        "size": 200,
    }
    test = {**dev, "accuracy": accuracy if test_accuracy is None else test_accuracy}
    strength_part = "" if strength is None else f"/{strength_name}={strength!r}"
    return {
        "schema": RECORD_SCHEMA,
        "point_id": f"{method}{strength_part}/seed={seed}",
        "method": method,
        "kind": kind,
        "strength_name": strength_name,
        "strength": strength,
        "seed": seed,
        "metrics": {"train": dict(dev), "dev": dev, "test": test},
    }


# dev accuracy / NFR / BTC; front on (NFR ↓, accuracy ↑): D, B, A (CE is beaten by A, C by B)
CE = record("cross-entropy", None, 0, 0.90, 0.05, btc=0.95)
A = record("fd-kl", 1.0, 0, 0.91, 0.03, btc=0.96)
B = record("fd-kl", 2.0, 0, 0.89, 0.02, btc=0.97)
C = record("bcwi", 0.5, 0, 0.85, 0.02, btc=0.97)
D = record("bcwi", 0.8, 0, 0.80, 0.01, btc=0.99)
RECORDS = [A, C, CE, D, B]  # store order is not grid order


def ids(frame):
    return [point_ids[0] for point_ids in frame["point_ids"]]


def test_front_of_accuracy_against_nfr():
    front = pareto_front(RECORDS)
    assert ids(front) == [D["point_id"], B["point_id"], A["point_id"]]
    assert list(front["negative_flip_rate"]) == [0.01, 0.02, 0.03]
    assert list(front["accuracy"]) == [0.80, 0.89, 0.91]
    assert list(front.columns) == [
        "method",
        "kind",
        "strength_name",
        "strength",
        "seeds",
        "point_ids",
        "negative_flip_rate",
        "accuracy",
    ]


def test_front_direction_follows_the_metric():
    # BTC is better high: A, B and D are undominated; CE (0.95, 0.90) is beaten by A (0.96, 0.91)
    # and C (0.97, 0.85) by B (0.97, 0.89). Minimising BTC would keep CE and A instead.
    front = pareto_front(RECORDS, x="backward_trust_compatibility")
    assert ids(front) == [A["point_id"], B["point_id"], D["point_id"]]
    # NFR on both axes' roles swapped: y minimised; the front of (accuracy ↑, NFR ↓) is the same set
    swapped = pareto_front(RECORDS, x="accuracy", y="negative_flip_rate")
    assert sorted(ids(swapped)) == sorted(ids(pareto_front(RECORDS)))


def test_front_over_seed_means_and_over_points():
    second = record("fd-kl", 1.0, 1, 0.85, 0.05)  # A's second seed: mean (0.88, 0.04)
    records = [*RECORDS, second]
    by_configuration = pareto_front(records)
    # mean A (0.04, 0.88) is beaten by B (0.02, 0.89); CE (0.05, 0.90) is now the most accurate
    assert ids(by_configuration) == [D["point_id"], B["point_id"], CE["point_id"]]
    by_point = pareto_front(records, by="point")
    assert ids(by_point) == [D["point_id"], B["point_id"], A["point_id"]]
    mean = pareto_front([A, second], by="configuration")
    assert mean["seeds"][0] == (0, 1)
    assert mean["accuracy"][0] == (0.91 + 0.85) / 2
    assert mean["negative_flip_rate"][0] == (0.03 + 0.05) / 2


def test_rows_with_undefined_metrics_are_left_out():
    undefined = record("bcwi", 0.9, 0, 0.95, math.nan)
    assert undefined["point_id"] not in ids(pareto_front([*RECORDS, undefined]))
    assert pareto_front(RECORDS, x="relative_negative_flip_rate").empty


@pytest.mark.parametrize(
    ("rule", "method", "chosen"),
    [
        ("max-accuracy", None, A),
        ("min-nfr-within:0.005", None, A),  # accuracy ≥ 0.895: CE, A → lowest NFR A
        ("min-nfr-within:0.02", None, B),  # accuracy ≥ 0.88: CE, A, B → B
        ("min-nfr-above:0.84", None, B),  # B and C tie on NFR 0.02; B is more accurate
        ("min-nfr-above:0.5", None, D),
        ("max-old-weight-within:0.1", "bcwi", D),  # accuracy ≥ 0.80: bcwi 0.5 and 0.8
        ("max-old-weight-within:0.06", "bcwi", C),  # accuracy ≥ 0.84: bcwi 0.5 only
        ("max-old-weight-within:0.005", "bcwi", CE),  # no old-weight is within: the new model
        ("max-old-weight-within:0.02", "fd-kl", B),
    ],
)
def test_selection_rules(rule, method, chosen):
    selection = select_point(RECORDS, rule, method=method)
    assert selection.point_ids == (chosen["point_id"],)
    assert selection.metrics["accuracy"] == chosen["metrics"]["dev"]["accuracy"]
    assert selection.reference_accuracy == 0.90
    assert selection.rule == str(WeightRule.parse(rule))
    assert selection.split == "dev"


def test_selection_explains_itself_and_uses_the_chosen_split():
    selection = select_point(RECORDS, "min-nfr-within:0.02")
    assert selection.reason == (
        "fd-kl weight=2 is the lowest mean dev NFR among configurations with accuracy ≥ "
        "cross-entropy's 0.9000 − 0.02: dev accuracy 0.8900, NFR 0.0200 (mean over 1 seed); "
        "cross-entropy: accuracy 0.9000, NFR 0.0500."
    )
    on_test = [record("cross-entropy", None, 0, 0.9, 0.05, test_accuracy=0.5), A]
    assert select_point(on_test, "max-accuracy", split="test").method == "fd-kl"
    assert select_point(on_test, "max-accuracy", split="dev").method == "fd-kl"
    assert select_point([*on_test[:1], B], "max-accuracy", split="test").method == "fd-kl"


def test_selection_averages_seeds():
    second_ce = record("cross-entropy", None, 1, 0.80, 0.07)  # CE mean accuracy 0.85
    selection = select_point([*RECORDS, second_ce], "min-nfr-within:0.0")
    # accuracy ≥ 0.85: A, B, C → lowest NFR 0.02 (B, C) → B is more accurate
    assert selection.point_ids == (B["point_id"],)
    assert selection.reference_accuracy == (0.90 + 0.80) / 2


def test_selection_errors():
    with pytest.raises(InputError, match="compares strengths within one method"):
        select_point(RECORDS, "max-old-weight-within:0.01")
    with pytest.raises(InputError, match="relative to the cross-entropy configuration"):
        select_point([A, B], "min-nfr-within:0.01")
    assert select_point([A, B], "max-accuracy").point_ids == (A["point_id"],)
    with pytest.raises(
        InputError,
        match=r"no configuration reaches mean dev accuracy ≥ 0.95; the best is fd-kl weight=1 with 0.9100",
    ):
        select_point(RECORDS, "min-nfr-above:0.95")
    with pytest.raises(InputError, match=r"method='ldi' has no records; the records hold"):
        select_point(RECORDS, "max-accuracy", method="ldi")
    with pytest.raises(InputError, match="no records to select from"):
        select_point([], "max-accuracy")
    with pytest.raises(InputError, match="selection rule 'best' is unknown"):
        select_point(RECORDS, "best")


def test_summary_mean_and_sample_deviation_over_seeds():
    second = record("fd-kl", 1.0, 1, 0.89, 0.05)
    frame = summarise([*RECORDS, second])
    assert list(frame["method"]) == ["cross-entropy", "fd-kl", "fd-kl", "bcwi", "bcwi"]
    assert list(frame["strength"][1:]) == [1.0, 2.0, 0.5, 0.8]
    assert frame["strength"].isna()[0]
    row = frame.iloc[1]
    assert row["n_seeds"] == 2 and row["seeds"] == (0, 1)
    assert row["dev.accuracy"] == (0.91 + 0.89) / 2
    assert row["dev.accuracy.std"] == pytest.approx(math.sqrt(2 * 0.01**2), rel=1e-12)
    assert row["dev.negative_flip_rate"] == pytest.approx(0.04, rel=1e-12)
    assert math.isnan(frame.iloc[2]["dev.accuracy.std"])  # one seed: no deviation
    assert math.isnan(row["dev.relative_negative_flip_rate"])  # all null
    assert len(frame.columns) == 6 + 2 * 7 * 2
    assert "train.accuracy" in summarise(RECORDS, ("train",)).columns


def test_best_so_far_is_the_lowest_nfr_within_half_a_point_of_the_best():
    assert best_so_far([]) is None
    assert best_so_far(RECORDS).point_ids == (A["point_id"],)  # only A is within 0.005 of 0.91
    close = record("bcwi", 0.3, 0, 0.906, 0.001)
    assert best_so_far([*RECORDS, close]).point_ids == (close["point_id"],)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"x": "accuracy"}, "x and y are both 'accuracy'"),
        ({"x": "nfr"}, r"x='nfr'; expected one of"),
        (
            {"split": "validation"},
            r"split='validation'; expected one of \('train', 'dev', 'test'\)",
        ),
        ({"by": "seed"}, r"by='seed'; expected one of"),
    ],
)
def test_front_argument_errors(arguments, message):
    with pytest.raises(InputError, match=message):
        pareto_front(RECORDS, **arguments)


def test_records_must_be_sweep_records():
    with pytest.raises(InputError, match=r"records\[0\] is not a sweep record"):
        pareto_front([{"point_id": "x"}])
    with pytest.raises(InputError, match="expected a list of records"):
        pareto_front(A)
    broken = {**A, "metrics": {"dev": {}}}
    with pytest.raises(InputError, match=r"has no metrics\['dev'\]\['negative_flip_rate'\]"):
        pareto_front([broken])
