"""Sweep points for the scatter plots: records checked, Pareto fronts, the reference line."""

from __future__ import annotations

import numpy as np
import pytest

import flipless
from flipless.errors import FliplessWarning, InputError
from flipless.report.points import (
    _pareto_front,
    point_from_comparison,
    point_from_record,
    sweep_payload,
)


def record(method, strength, seed, accuracy, nfr, btc=0.9, bec=0.5, old_accuracy=0.8):
    values = {
        "accuracy": accuracy,
        "old_accuracy": old_accuracy,
        "negative_flip_rate": nfr,
        "positive_flip_rate": 0.1,
        "relative_negative_flip_rate": 0.3,
        "backward_trust_compatibility": btc,
        "backward_error_compatibility": bec,
        "size": 100,
    }
    return {
        "schema": "flipless.sweep-record/1",
        "point_id": f"{method}/weight={strength}/seed={seed}",
        "method": method,
        "kind": "loss",
        "strength_name": "weight",
        "strength": strength,
        "seed": seed,
        "config": {},
        "metrics": {"train": dict(values), "dev": dict(values), "test": dict(values)},
        "comparison_path": None,
        "model_path": None,
        "duration_s": 1.0,
        "finished_at": "2026-11-25T16:40:00+00:00",
        "versions": {},
    }


def test_pareto_front_by_hand():
    accuracy = [0.90, 0.92, 0.91, 0.92, None, 0.89]
    nfr = [0.02, 0.03, 0.01, 0.03, 0.0, 0.005]
    # 0 is beaten by 2 (more accurate, fewer flips); 1 and 3 tie (both stay); 4 is undefined.
    assert _pareto_front(accuracy, nfr, higher=False) == [1, 2, 3, 5]
    btc = [0.95, 0.96, 0.97, 0.90, 0.99, 0.99]
    # Higher BTC is better: 2 (0.91, 0.97) beats 0; 1 beats 3; 5 (0.89, 0.99) stays.
    assert _pareto_front(accuracy, btc, higher=True) == [1, 2, 5]
    assert _pareto_front([None], [0.1], higher=True) == []


def test_pareto_front_agrees_with_the_sweeps_own_front():
    from flipless.sweep.pareto import pareto_front

    rng = np.random.default_rng(3)
    records = [
        record("fd-kl", float(s), seed, *rng.uniform(0.8, 0.95, 1), *rng.uniform(0, 0.05, 1))
        for s in (0.5, 1.0, 2.0, 4.0)
        for seed in (0, 1, 2)
    ]
    theirs = pareto_front(records, "negative_flip_rate", "accuracy", "dev", by="point")
    points = [point_from_record(r, i) for i, r in enumerate(records)]
    ours = _pareto_front(
        [p.metrics["dev"]["accuracy"] for p in points],
        [p.metrics["dev"]["negative_flip_rate"] for p in points],
        higher=False,
    )
    assert sorted(records[i]["point_id"] for i in ours) == sorted(
        pid for ids in theirs["point_ids"] for pid in ids
    )


def test_records_are_checked():
    with pytest.raises(InputError, match="expected a JSON object"):
        point_from_record([1, 2], 0)
    with pytest.raises(InputError, match=r"expected 'flipless\.sweep-record/1'"):
        point_from_record({**record("a", 1.0, 0, 0.9, 0.1), "schema": "other"}, 3)
    broken = record("a", 1.0, 0, 0.9, 0.1)
    del broken["metrics"]["dev"]["backward_error_compatibility"]
    with pytest.raises(InputError, match=r"sweep record 4: split 'dev' lacks \['backward_error"):
        point_from_record(broken, 4)
    missing = record("a", 1.0, 0, 0.9, 0.1)
    del missing["seed"]
    with pytest.raises(InputError, match=r"lacks \['seed'\]"):
        point_from_record(missing, 0)


def test_sweep_payload():
    records = [
        record("cross-entropy", None, 0, 0.92, 0.03),
        record("fd-kl", 1.0, 0, 0.91, 0.01, btc=0.97),
        record("fd-kl", 2.0, 0, 0.90, 0.02, bec=float("nan")),
    ]
    payload = sweep_payload([point_from_record(r, i) for i, r in enumerate(records)])
    assert payload["splits"] == ["test", "dev", "train"] and payload["default_split"] == "test"
    assert payload["methods"] == ["cross-entropy", "fd-kl"]
    assert [p["method_index"] for p in payload["points"]] == [0, 1, 1]
    assert [p["label"] for p in payload["points"]] == [
        "cross-entropy seed=0",
        "fd-kl weight=1 seed=0",
        "fd-kl weight=2 seed=0",
    ]
    test = payload["metrics"]["test"]
    assert test["old_accuracy"] == 0.8
    assert test["accuracy"] == [0.92, 0.91, 0.90]
    assert test["backward_error_compatibility"] == [0.5, 0.5, None]  # NaN: not plotted
    assert test["pareto"]["negative_flip_rate"] == [0, 1]
    assert test["pareto"]["backward_trust_compatibility"] == [0, 1]
    assert test["pareto"]["backward_error_compatibility"] == [0]


def test_different_old_models_warn():
    records = [record("a", 1.0, 0, 0.9, 0.1), record("a", 2.0, 0, 0.9, 0.1, old_accuracy=0.7)]
    with pytest.warns(FliplessWarning, match="differs between points"):
        payload = sweep_payload([point_from_record(r, i) for i, r in enumerate(records)])
    assert payload["metrics"]["dev"]["old_accuracy"] == 0.8


def test_a_named_comparison_is_a_point():
    comparison = flipless.compare([0, 1, 1, 0], [0, 1, 0, 0], [0, 1, 1, 1])
    point = point_from_comparison("ldi", comparison, 2)
    assert point.comparison == 2 and point.label == "ldi"
    assert point.metrics["given"]["accuracy"] == 0.5
    assert point.metrics["given"]["negative_flip_rate"] == 0.25
    assert point.metrics["given"]["backward_trust_compatibility"] == 2 / 3
