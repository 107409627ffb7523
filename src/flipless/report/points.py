"""Sweep points → the scatter plots: accuracy against NFR, BTC and BEC, one point per run.

A point comes from a sweep record (schema ``flipless.sweep-record/1``, metrics per split) or
from a named comparison (one run measured against the old model; one split). The old model's
accuracy is the plots' reference line, and each plot marks its Pareto front: the points no
other point beats on both axes (higher accuracy; lower NFR, higher BTC, higher BEC).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from flipless.errors import FliplessWarning, InputError
from flipless.metrics.comparison import Comparison

RECORD_SCHEMA = "flipless.sweep-record/1"
#: The scatter plots' x axes: (metric, label, whether higher is better).
AXES = (
    ("negative_flip_rate", "NFR", False),
    ("backward_trust_compatibility", "BTC", True),
    ("backward_error_compatibility", "BEC", True),
)
METRICS = ("accuracy", "old_accuracy", *(axis for axis, _, _ in AXES))
SPLIT_ORDER = ("test", "dev", "train")
#: The split of points made from comparisons given directly.
GIVEN_SPLIT = "given"


@dataclass(frozen=True)
class Point:
    """One run of a sweep: how it was trained and what it measured, per split."""

    point_id: str
    method: str
    kind: str | None
    strength_name: str | None
    strength: float | None
    seed: int | None
    metrics: dict[str, dict[str, float | None]]
    comparison: int | None = None  # index of its comparison in the report, when there is one

    @property
    def label(self) -> str:
        parts = [self.method]
        if self.strength is not None:
            parts.append(f"{self.strength_name or 'strength'}={self.strength:g}")
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        return " ".join(parts)


def _float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def point_from_record(record: Any, position: int) -> Point:
    """Check one sweep record (see the shared record format) and take what the plots need."""
    where = f"sweep record {position}"
    if not isinstance(record, Mapping):
        raise InputError(f"{where} is a {type(record).__name__}; expected a JSON object (dict).")
    if record.get("schema") != RECORD_SCHEMA:
        raise InputError(
            f"{where} has schema {record.get('schema')!r}; expected {RECORD_SCHEMA!r} (written "
            "by flipless.sweep)."
        )
    missing = [key for key in ("point_id", "method", "seed", "metrics") if key not in record]
    if missing:
        raise InputError(f"{where} lacks {missing}; expected every field of {RECORD_SCHEMA}.")
    metrics = record["metrics"]
    if not isinstance(metrics, Mapping) or not metrics:
        raise InputError(f"{where}: 'metrics' is {metrics!r}; expected metrics per split.")
    checked: dict[str, dict[str, float | None]] = {}
    for split, values in metrics.items():
        absent = [name for name in METRICS if not isinstance(values, Mapping) or name not in values]
        if absent:
            raise InputError(f"{where}: split {split!r} lacks {absent}; expected {list(METRICS)}.")
        checked[str(split)] = {name: _float(values[name]) for name in METRICS}
    strength = record.get("strength")
    return Point(
        point_id=str(record["point_id"]),
        method=str(record["method"]),
        kind=record.get("kind"),
        strength_name=record.get("strength_name"),
        strength=None if strength is None else float(strength),
        seed=None if record["seed"] is None else int(record["seed"]),
        metrics=checked,
    )


def point_from_comparison(name: str, comparison: Comparison, index: int) -> Point:
    """A point for a named comparison: its method is the name; one split, ``given``."""
    metrics = {
        "accuracy": comparison.accuracy_new,
        "old_accuracy": comparison.accuracy_old,
        **{axis: getattr(comparison, axis) for axis, _, _ in AXES},
    }
    return Point(
        point_id=name,
        method=name,
        kind=None,
        strength_name=None,
        strength=None,
        seed=None,
        metrics={GIVEN_SPLIT: {key: _float(value) for key, value in metrics.items()}},
        comparison=index,
    )


def _pareto_front(
    accuracy: list[float | None], metric: list[float | None], higher: bool
) -> list[int]:
    """Indices of the points no other point dominates (accuracy up; metric up or down).

    Point j dominates i when it is at least as good on both axes and better on one. Points
    with an undefined value are left out. (Used until flipless.sweep offers its own.)
    """
    kept = [i for i, (a, m) in enumerate(zip(accuracy, metric, strict=True)) if None not in (a, m)]
    if not kept:
        return []
    y = np.array([accuracy[i] for i in kept], dtype=np.float64)
    x = np.array([metric[i] for i in kept], dtype=np.float64) * (1.0 if higher else -1.0)
    at_least = (x[None, :] >= x[:, None]) & (y[None, :] >= y[:, None])
    better = (x[None, :] > x[:, None]) | (y[None, :] > y[:, None])
    dominated = (at_least & better).any(axis=1)
    return [kept[i] for i in np.flatnonzero(~dominated)]


def _old_accuracy(points: list[Point], split: str) -> float | None:
    values = [p.metrics[split]["old_accuracy"] for p in points if split in p.metrics]
    values = [v for v in values if v is not None]
    if not values:
        return None
    if max(values) - min(values) > 1e-9:
        warnings.warn(
            f"The old model's {split} accuracy differs between points ({min(values):.4f} to "
            f"{max(values):.4f}); expected one old model for the whole sweep. The reference "
            "line shows the first point's value.",
            FliplessWarning,
            stacklevel=3,
        )
    return values[0]


def sweep_payload(points: list[Point]) -> dict[str, Any]:
    """The scatter plots' data: points, metrics per split, reference line and Pareto fronts."""
    splits = sorted(
        {split for p in points for split in p.metrics},
        key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s),
    )
    methods = list(dict.fromkeys(p.method for p in points))
    per_split = {}
    for split in splits:
        values = {name: [p.metrics.get(split, {}).get(name) for p in points] for name in METRICS}
        per_split[split] = {
            **{name: values[name] for name in METRICS if name != "old_accuracy"},
            "old_accuracy": _old_accuracy(points, split),
            "pareto": {
                axis: _pareto_front(values["accuracy"], values[axis], higher)
                for axis, _, higher in AXES
            },
        }
    return {
        "splits": splits,
        "default_split": splits[0] if splits else None,
        "methods": methods,
        "axes": [{"key": key, "label": label, "higher_is_better": up} for key, label, up in AXES],
        "points": [
            {
                "point_id": p.point_id,
                "label": p.label,
                "method": p.method,
                "method_index": methods.index(p.method),
                "kind": p.kind,
                "strength_name": p.strength_name,
                "strength": p.strength,
                "seed": p.seed,
                "comparison": p.comparison,
            }
            for p in points
        ],
        "metrics": per_split,
    }
