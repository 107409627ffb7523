"""Reading a sweep's results: the Pareto front, a stated selection rule, mean ± std over seeds.

All three work on the records of a store (:func:`~flipless.sweep.store.read_records`) and on
one split at a time: choose on ``dev``, report on ``test``. A *configuration* is a method
with one strength (``fd-kl`` at λ = 1); its metrics are the means over its seeds (NaN values
left out).

Directions: accuracy, the old model's accuracy, PFR, BTC and BEC are better high; NFR and the
relative NFR are better low. :func:`pareto_front` keeps the rows no other row beats on both
metrics (at least as good on both and better on one), through
:func:`flipless.train.selection.undominated`, which also keeps only the first of identical
rows.

:func:`select_point` applies the interpolation issue's rules
(:class:`flipless.merge.selection.WeightRule`) to configurations, with cross-entropy (the
plain update, strength 0 of every method) in the place of the new model at α = 0:

==============================  ==================================================================
rule                            the chosen configuration
==============================  ==================================================================
``max-old-weight-within:ε``     within one method (``method=``, or the only one swept), the
                                largest strength whose accuracy ≥ acc(cross-entropy) − ε
``min-nfr-within:ε``            the lowest NFR among configurations with accuracy ≥
                                acc(cross-entropy) − ε; ties: higher accuracy, then grid order
``min-nfr-above:floor``         the lowest NFR among configurations with accuracy ≥ floor
``max-accuracy``                the highest accuracy; ties: lower NFR, then grid order
==============================  ==================================================================

Grid order is cross-entropy first, then the methods as they first appear, strengths
increasing. The within rules need the cross-entropy points (every sweep has them). Selection
is over configurations, never over single seeds, whose luck the mean averages out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from flipless.errors import InputError

CROSS_ENTROPY = "cross-entropy"
MAXIMISED = (
    "accuracy",
    "old_accuracy",
    "positive_flip_rate",
    "backward_trust_compatibility",
    "backward_error_compatibility",
)
MINIMISED = ("negative_flip_rate", "relative_negative_flip_rate")
METRICS = MAXIMISED + MINIMISED
SPLITS = ("train", "dev", "test")
GROUPINGS = ("configuration", "point")
_IDENTITY = ("method", "kind", "strength_name", "strength")


@dataclass(frozen=True)
class Group:
    """Records of one configuration (or one point): who they are and their mean metrics."""

    method: str
    kind: str
    strength_name: str
    strength: float | None
    records: tuple[dict[str, Any], ...]

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(record["seed"] for record in self.records)

    @property
    def point_ids(self) -> tuple[str, ...]:
        return tuple(record["point_id"] for record in self.records)

    @property
    def label(self) -> str:
        if self.strength is None:
            return self.method
        return f"{self.method} {self.strength_name}={self.strength:g}"

    def values(self, name: str, split: str) -> list[float]:
        return [metric(record, name, split) for record in self.records]

    def mean(self, name: str, split: str) -> float:
        """The mean over the records, NaN values left out (NaN when all are)."""
        present = [value for value in self.values(name, split) if not math.isnan(value)]
        return math.fsum(present) / len(present) if present else math.nan

    def std(self, name: str, split: str) -> float:
        """The sample standard deviation (n − 1); NaN with fewer than two values."""
        present = [value for value in self.values(name, split) if not math.isnan(value)]
        if len(present) < 2:
            return math.nan
        mean = math.fsum(present) / len(present)
        return math.sqrt(math.fsum((v - mean) ** 2 for v in present) / (len(present) - 1))


def _check(name: str, choices: Sequence[str], what: str) -> str:
    if name not in choices:
        raise InputError(f"{what}={name!r}; expected one of {tuple(choices)}.")
    return name


def metric(record: dict[str, Any], name: str, split: str) -> float:
    """One metric of a record as a float (a stored null is NaN)."""
    try:
        value = record["metrics"][split][name]
    except (KeyError, TypeError):
        raise InputError(
            f"record {record.get('point_id')!r} has no metrics[{split!r}][{name!r}]; expected "
            "a record of flipless.sweep (schema flipless.sweep-record/1)."
        ) from None
    return math.nan if value is None else float(value)


def groups(records: Sequence[dict[str, Any]], by: str = "configuration") -> list[Group]:
    """The records grouped per configuration (or one per point), in grid order."""
    _check(by, GROUPINGS, "by")
    if isinstance(records, dict) or not isinstance(records, Sequence):
        raise InputError(f"records is {type(records).__name__}; expected a list of records.")
    order: dict[str, int] = {CROSS_ENTROPY: -1}
    found: dict[Any, list[dict[str, Any]]] = {}
    for index, record in enumerate(records):
        if not isinstance(record, dict) or any(key not in record for key in _IDENTITY):
            raise InputError(f"records[{index}] is not a sweep record (method, strength, …).")
        order.setdefault(record["method"], len(order))
        key = tuple(record[name] for name in _IDENTITY)
        key = (*key, record["point_id"]) if by == "point" else key
        found.setdefault(key, []).append(record)
    result = [Group(*key[:4], tuple(members)) for key, members in found.items()]

    def position(group: Group) -> tuple[Any, ...]:
        strength = -math.inf if group.strength is None else group.strength
        return (order[group.method], strength, group.seeds)

    return sorted(result, key=position)


def _goodness(name: str, value: float) -> float:
    return value if name in MAXIMISED else -value


def pareto_front(
    records: Sequence[dict[str, Any]],
    x: str = "negative_flip_rate",
    y: str = "accuracy",
    split: str = "dev",
    *,
    by: str = "configuration",
) -> pd.DataFrame:
    """The undominated configurations (``by="point"``: points) on metrics ``x`` and ``y``.

    Returns one row per member of the front, sorted by ``x`` increasing: ``method``, ``kind``,
    ``strength_name``, ``strength``, ``seeds`` and ``point_ids`` (tuples), and the two metrics
    (means over seeds) under their names. Rows with NaN in ``x`` or ``y`` are left out.
    """
    from flipless.train.selection import undominated  # imported here: reading needs no torch

    _check(x, METRICS, "x")
    _check(y, METRICS, "y")
    _check(split, SPLITS, "split")
    if x == y:
        raise InputError(f"x and y are both {x!r}; a front needs two different metrics.")
    rows = [(group, group.mean(x, split), group.mean(y, split)) for group in groups(records, by)]
    rows = [row for row in rows if not (math.isnan(row[1]) or math.isnan(row[2]))]
    kept = undominated(
        [_goodness(y, value) for _, _, value in rows],
        [-_goodness(x, value) for _, value, _ in rows],
    )
    front = [
        {
            "method": group.method,
            "kind": group.kind,
            "strength_name": group.strength_name,
            "strength": group.strength,
            "seeds": group.seeds,
            "point_ids": group.point_ids,
            x: x_value,
            y: y_value,
        }
        for index, (group, x_value, y_value) in enumerate(rows)
        if index in kept
    ]
    columns = ["method", "kind", "strength_name", "strength", "seeds", "point_ids", x, y]
    frame = pd.DataFrame(front, columns=columns)
    return frame.sort_values([x, y], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class PointSelection:
    """The configuration a rule chose, its mean metrics on the split, and why.

    Attributes:
        rule: the rule as text.
        split: the split it was applied to.
        method, kind, strength_name, strength: the chosen configuration.
        seeds, point_ids: its records.
        metrics: mean of each metric over its seeds, on ``split``.
        reference_accuracy: cross-entropy's mean accuracy on ``split`` (None without it).
        reason: one sentence on why it won.
    """

    rule: str
    split: str
    method: str
    kind: str
    strength_name: str
    strength: float | None
    seeds: tuple[int, ...]
    point_ids: tuple[str, ...]
    metrics: dict[str, float]
    reference_accuracy: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def select_point(
    records: Sequence[dict[str, Any]],
    rule: Any = "min-nfr-within:0.005",
    split: str = "dev",
    *,
    method: str | None = None,
) -> PointSelection:
    """Choose a configuration by ``rule`` (text or a ``WeightRule``); see the module docstring."""
    from flipless.merge.selection import CurvePoint, WeightRule  # imported here: no torch to read

    parsed = rule if isinstance(rule, WeightRule) else WeightRule.parse(rule)
    _check(split, SPLITS, "split")
    everything = groups(records)
    if not everything:
        raise InputError("no records to select from; run the sweep first.")
    usable = [
        group
        for group in everything
        if not math.isnan(group.mean("accuracy", split))
        and not math.isnan(group.mean("negative_flip_rate", split))
    ]
    reference = next((group for group in usable if group.method == CROSS_ENTROPY), None)
    others = [group for group in usable if group.method != CROSS_ENTROPY]
    if method is not None:
        others = [group for group in others if group.method == method]
        if not others and method != CROSS_ENTROPY:
            present = sorted({group.method for group in everything})
            raise InputError(f"method={method!r} has no records; the records hold {present}.")
    within = parsed.name in ("max-old-weight-within", "min-nfr-within")
    if within and reference is None:
        raise InputError(
            f"rule {parsed} is relative to the cross-entropy configuration, which has no "
            f"usable {split} records; use 'min-nfr-above:<floor>' or 'max-accuracy'."
        )
    if parsed.name == "max-old-weight-within" and len({group.method for group in others}) > 1:
        raise InputError(
            f"rule {parsed} compares strengths within one method, but the records hold "
            f"{sorted({group.method for group in others})}; pass method='bcwi' (for example)."
        )
    candidates = ([reference] if reference is not None else []) + others
    if not candidates:
        raise InputError(f"no configuration has a defined {split} accuracy and NFR.")
    curve = [
        CurvePoint(
            old_weight=float(position),
            accuracy=group.mean("accuracy", split),
            negative_flip_rate=group.mean("negative_flip_rate", split),
            positive_flip_rate=group.mean("positive_flip_rate", split),
            backward_trust_compatibility=group.mean("backward_trust_compatibility", split),
            backward_error_compatibility=group.mean("backward_error_compatibility", split),
        )
        for position, group in enumerate(candidates)
    ]
    if parsed.name == "min-nfr-above" and all(p.accuracy < parsed.argument - 1e-12 for p in curve):
        best = max(candidates, key=lambda group: group.mean("accuracy", split))
        raise InputError(
            f"rule {parsed}: no configuration reaches mean {split} accuracy ≥ "
            f"{parsed.argument:g}; the best is {best.label} with "
            f"{best.mean('accuracy', split):.4f}. Lower the floor, or use 'min-nfr-within:<ε>'."
        )
    index, _ = parsed.choose(curve)
    chosen = candidates[index]
    means = {name: chosen.mean(name, split) for name in METRICS}
    reference_accuracy = None if reference is None else reference.mean("accuracy", split)
    return PointSelection(
        rule=str(parsed),
        split=split,
        method=chosen.method,
        kind=chosen.kind,
        strength_name=chosen.strength_name,
        strength=chosen.strength,
        seeds=chosen.seeds,
        point_ids=chosen.point_ids,
        metrics=means,
        reference_accuracy=reference_accuracy,
        reason=_reason(parsed, chosen, means, reference, split, len(candidates)),
    )


def _reason(
    rule: Any,
    chosen: Group,
    means: dict[str, float],
    reference: Group | None,
    split: str,
    count: int,
) -> str:
    if rule.name == "max-accuracy":
        why = f"the highest mean {split} accuracy of {count} configurations"
    elif rule.name == "min-nfr-above":
        why = f"the lowest mean {split} NFR among configurations with accuracy ≥ {rule.argument:g}"
    else:
        floor = f"accuracy ≥ cross-entropy's {reference.mean('accuracy', split):.4f} − {rule.argument:g}"
        why = (
            f"the largest {chosen.strength_name} of {chosen.method} with {floor}"
            if rule.name == "max-old-weight-within"
            else f"the lowest mean {split} NFR among configurations with {floor}"
        )
    seeds = len(chosen.records)
    text = (
        f"{chosen.label} is {why}: {split} accuracy {means['accuracy']:.4f}, NFR "
        f"{means['negative_flip_rate']:.4f} (mean over {seeds} seed{'s' * (seeds != 1)})"
    )
    if reference is not None and reference is not chosen:
        text += (
            f"; cross-entropy: accuracy {reference.mean('accuracy', split):.4f}, NFR "
            f"{reference.mean('negative_flip_rate', split):.4f}"
        )
    return text + "."


def summarise(
    records: Sequence[dict[str, Any]], splits: Sequence[str] = ("dev", "test")
) -> pd.DataFrame:
    """Mean and sample standard deviation over seeds of every metric, per configuration.

    One row per configuration in grid order: ``method``, ``kind``, ``strength_name``,
    ``strength``, ``n_seeds``, ``seeds``, then for each split and metric
    ``<split>.<metric>`` (the mean, NaN values left out) and ``<split>.<metric>.std`` (n − 1
    in the denominator; NaN with one seed).
    """
    splits = [_check(split, SPLITS, "split") for split in splits]
    rows = []
    for group in groups(records):
        row: dict[str, Any] = {
            "method": group.method,
            "kind": group.kind,
            "strength_name": group.strength_name,
            "strength": group.strength,
            "n_seeds": len(group.records),
            "seeds": group.seeds,
        }
        for split in splits:
            for name in METRICS:
                row[f"{split}.{name}"] = group.mean(name, split)
                row[f"{split}.{name}.std"] = group.std(name, split)
        rows.append(row)
    columns = ["method", "kind", "strength_name", "strength", "n_seeds", "seeds"]
    columns += [f"{s}.{n}{std}" for s in splits for n in METRICS for std in ("", ".std")]
    return pd.DataFrame(rows, columns=columns)


def best_so_far(
    records: Sequence[dict[str, Any]], tolerance: float = 0.005
) -> PointSelection | None:
    """The progress bar's best point: the lowest mean dev NFR among the configurations whose
    mean dev accuracy is within ``tolerance`` (half a point) of the best one so far."""
    from flipless.merge.selection import WeightRule

    accuracies = [group.mean("accuracy", "dev") for group in groups(records)]
    accuracies = [value for value in accuracies if not math.isnan(value)]
    if not accuracies:
        return None
    return select_point(records, WeightRule("min-nfr-above", max(0.0, max(accuracies) - tolerance)))
