"""Choosing the old-weight α of an interpolated model on a dev split (METHODS.md §3).

Backward-compatible weight interpolation (BCWI; Schumann et al., 2023, "Backward
Compatibility During Data Updates by Weight Interpolation") builds, for each old-weight α,

    θ(α) = α θ_old + (1 − α) θ̄_new

(α = 0 is the new model, α = 1 the old one; Fisher-weighted and soup variants in
:mod:`flipless.merge.tensors`). The paper's code did not say how α was chosen.
:func:`select_old_weight` makes the choice explicit: it evaluates every α of a grid on a
**dev** split (never the test split, whose numbers would become optimistic), measures each
candidate against the old model with :func:`flipless.compare`, and picks α by a stated rule:

==============================  ==================================================================
rule                            the chosen old-weight
==============================  ==================================================================
``max-old-weight-within:ε``     the largest α whose dev accuracy ≥ acc(0) − ε: as compatible as
                                possible while as accurate as the new model, up to ε
``min-nfr-within:ε``            the lowest negative flip rate among the α with accuracy ≥
                                acc(0) − ε; ties: higher accuracy, then smaller α
``min-nfr-above:floor``         the lowest negative flip rate among the α with accuracy ≥ floor;
                                ties: higher accuracy, then smaller α
``max-accuracy``                the highest accuracy; ties: lower negative flip rate, then smaller α
==============================  ==================================================================

acc(0) is the new model's dev accuracy; ε and the floor are fractions in [0, 1] (0.005 is half a
point). α = 0 is always evaluated, added to the grid when missing (the reason says so), so the
``within`` rules are always satisfiable; when no α satisfies ``min-nfr-above`` the selection
raises an :class:`~flipless.errors.InputError` that names the best accuracy seen, rather than
silently falling back to the new model.

:func:`interpolation_candidates` builds the candidates from models held in memory (plain,
Fisher-weighted, or a soup of several new models) through
:func:`~flipless.merge.interpolate.interpolate`: every floating-point tensor of the state dict,
BatchNorm running statistics included (re-estimate them with
:func:`~flipless.merge.batchnorm.reestimate_batchnorm` where it matters), integer tensors from
the first new model. Any other factory
``old_weight -> nn.Module`` can be passed to :func:`select_old_weight` instead.

This module sits below :mod:`flipless.train`: a dev split is anything with ``inputs`` and
``labels`` (a :class:`~flipless.data.labeled.LabeledData`, typically).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
from torch import nn

from flipless.errors import InputError, MismatchError
from flipless.merge.fisher import align_fisher_names
from flipless.merge.interpolate import check_sources, interpolate
from flipless.merge.policy import MergePolicy
from flipless.merge.sources import open_source
from flipless.merge.tensors import check_old_weight, soup_weights
from flipless.metrics.comparison import compare
from flipless.validation import first_few, to_numpy

#: The default grid of old-weights: 0, 0.1, …, 1.
DEFAULT_GRID = tuple(step / 10 for step in range(11))
#: Rules by name, and whether each takes an argument (ε or a floor).
RULES = {
    "max-old-weight-within": True,
    "min-nfr-within": True,
    "min-nfr-above": True,
    "max-accuracy": False,
}
_SLACK = 1e-12  # accuracy comparisons forgive float rounding of count / N


@runtime_checkable
class LabeledSplit(Protocol):
    """A split to evaluate on: ``inputs`` (a tensor [N, ...] or N texts) and ``labels`` [N]."""

    inputs: Any
    labels: Any


@dataclass(frozen=True)
class CurvePoint:
    """The dev metrics of the candidate at one old-weight, measured against the old model."""

    old_weight: float
    accuracy: float
    negative_flip_rate: float
    positive_flip_rate: float
    backward_trust_compatibility: float
    backward_error_compatibility: float


@dataclass(frozen=True)
class WeightRule:
    """A parsed selection rule; see the module docstring for the table of rules."""

    name: str
    argument: float | None = None

    @classmethod
    def parse(cls, text: str) -> WeightRule:
        """``"max-old-weight-within:0.005"`` → ``WeightRule("max-old-weight-within", 0.005)``."""
        if not isinstance(text, str):
            raise InputError(f"rule={text!r}; expected a string such as 'min-nfr-within:0.005'.")
        name, colon, argument = text.partition(":")
        if name not in RULES:
            raise InputError(
                f"selection rule {text!r} is unknown; expected one of "
                "'max-old-weight-within:<ε>', 'min-nfr-within:<ε>', 'min-nfr-above:<floor>', "
                "'max-accuracy' (ε and floor are accuracies as fractions, e.g. 0.005)."
            )
        if not RULES[name]:
            if colon:
                raise InputError(f"selection rule {name!r} takes no argument; got {text!r}.")
            return cls(name)
        try:
            value = float(argument)
        except ValueError:
            value = math.nan
        if not 0.0 <= value <= 1.0:
            raise InputError(
                f"selection rule {text!r}: expected '{name}:<x>' with 0 ≤ x ≤ 1, an accuracy as "
                "a fraction (e.g. 0.005 for half a point)."
            )
        return cls(name, value)

    def __str__(self) -> str:
        return self.name if self.argument is None else f"{self.name}:{self.argument!r}"

    def choose(self, curve: Sequence[CurvePoint]) -> tuple[int, str]:
        """The index of the chosen point of ``curve`` (sorted by α, starting at α = 0), and why."""
        weights = [point.old_weight for point in curve]
        if not weights or weights[0] != 0.0 or any(a >= b for a, b in itertools.pairwise(weights)):
            raise InputError(
                f"the curve's old-weights are {first_few(weights)}; expected them increasing from "
                "0 (the new model), as select_old_weight makes them."
            )
        new = curve[0]
        if self.name == "max-accuracy":
            index = min(
                range(len(curve)),
                key=lambda i: (-curve[i].accuracy, curve[i].negative_flip_rate, i),
            )
            return index, f"the highest dev accuracy ({curve[index].accuracy:.4f})"
        if self.name == "min-nfr-above":
            floor = float(self.argument)
            condition = f"dev accuracy ≥ {floor:g}"
        else:
            floor = new.accuracy - float(self.argument)
            condition = f"dev accuracy ≥ {new.accuracy:.4f} − {self.argument:g} (the new model's)"
        allowed = [i for i, point in enumerate(curve) if point.accuracy >= floor - _SLACK]
        if not allowed:
            best = max(curve, key=lambda point: point.accuracy)
            raise InputError(
                f"selection rule {self}: no old-weight reaches {condition}; the best dev accuracy "
                f"was {best.accuracy:.4f} (old_weight {best.old_weight:g}). Lower the floor, or "
                "use 'min-nfr-within:<ε>', which is relative to the new model."
            )
        if self.name == "max-old-weight-within":
            index = allowed[-1]
            return index, f"the largest old-weight with {condition}"
        index = min(allowed, key=lambda i: (curve[i].negative_flip_rate, -curve[i].accuracy, i))
        return index, f"the lowest dev NFR among the {len(allowed)} old-weights with {condition}"


@dataclass(frozen=True)
class WeightSelection:
    """The chosen old-weight, the whole dev curve behind it and the reason, for the report.

    Attributes:
        rule: the rule, as text (``"max-old-weight-within:0.005"``).
        chosen: the chosen old-weight α.
        curve: one :class:`CurvePoint` per evaluated α, in increasing α, starting at 0.
        new_accuracy: the new model's dev accuracy (the point at α = 0).
        reason: one sentence on why ``chosen`` won, with its accuracy and NFR.
        dev_size: the number of dev samples (one flip changes a rate by 1 / dev_size).
    """

    rule: str
    chosen: float
    curve: tuple[CurvePoint, ...]
    new_accuracy: float
    reason: str
    dev_size: int

    @property
    def chosen_point(self) -> CurvePoint:
        """The curve's point at the chosen old-weight."""
        return next(point for point in self.curve if point.old_weight == self.chosen)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (JSON-ready apart from NaN rates)."""
        return {
            "rule": self.rule,
            "chosen": self.chosen,
            "new_accuracy": self.new_accuracy,
            "reason": self.reason,
            "dev_size": self.dev_size,
            "curve": [asdict(point) for point in self.curve],
        }

    def to_frame(self) -> pd.DataFrame:
        """The curve as a table indexed by ``old_weight``, with a boolean ``chosen`` column."""
        frame = pd.DataFrame([asdict(point) for point in self.curve]).set_index("old_weight")
        frame["chosen"] = frame.index == self.chosen
        return frame


def select_old_weight(
    make_candidate: Callable[[float], nn.Module],
    dev: LabeledSplit,
    *,
    old_predictions: Any = None,
    old_model: nn.Module | None = None,
    grid: Sequence[float] = DEFAULT_GRID,
    rule: str = "max-old-weight-within:0.005",
    batch_size: int = 256,
    old_classes: Sequence[int | str] | None = None,
) -> WeightSelection:
    """Evaluate every old-weight of ``grid`` on ``dev`` and pick one by ``rule``.

    Args:
        make_candidate: builds the model at an old-weight α, e.g.
            ``interpolation_candidates(old, new)``; called once per α.
        dev: the split to choose on (a LabeledData: ``inputs`` and ``labels``); never test.
        old_predictions: the old model's predictions on ``dev``, labels [N] or scores [N, C].
        old_model: instead of ``old_predictions``, the old model to predict them with.
        grid: old-weights in [0, 1], without repeats, in any order; 0 is added when missing.
        rule: see the module docstring's table.
        batch_size: samples per forward pass.
        old_classes: when the old model knows fewer classes than the candidates, the classes
            it knows: NFR, PFR, BTC and BEC are then counted on the dev examples labelled with
            one of them (``compare(..., old_classes=...)``), while the accuracy stays the
            candidate's on every dev example (the new classes are part of the update).

    Each candidate's argmax predictions are compared with the old model's by
    :func:`flipless.compare`; the curve keeps its accuracy, NFR, PFR, BTC and BEC.
    """
    parsed = WeightRule.parse(rule)
    weights, added_zero = _check_grid(grid)
    labels = split_labels(dev)
    batch_size = _positive_int(batch_size, "batch_size")
    if (old_predictions is None) == (old_model is None):
        raise InputError(
            "give exactly one of old_predictions= (the old model's dev predictions, [N] or "
            "[N, C]) and old_model= (to predict them)."
        )
    if old_model is not None:
        old = predict_labels(old_model, dev, batch_size)
    else:
        old = to_numpy(old_predictions, "old_predictions")
        if old.ndim not in (1, 2) or old.shape[0] != labels.shape[0]:
            raise MismatchError(
                f"old_predictions has shape {old.shape}; expected labels [{labels.shape[0]}] or "
                f"scores [{labels.shape[0]}, C], one row per dev sample."
            )
    curve = []
    for old_weight in weights:
        candidate = make_candidate(old_weight)
        if not isinstance(candidate, nn.Module):
            raise InputError(
                f"make_candidate({old_weight:g}) returned {type(candidate).__name__}; expected "
                "a torch.nn.Module (the interpolated model)."
            )
        comparison = compare(
            old, predict_labels(candidate, dev, batch_size), labels, old_classes=old_classes
        )
        restriction = comparison.restriction
        curve.append(
            CurvePoint(
                old_weight=old_weight,
                accuracy=comparison.accuracy_new
                if restriction is None
                else restriction.accuracy_new_all,
                negative_flip_rate=comparison.negative_flip_rate,
                positive_flip_rate=comparison.positive_flip_rate,
                backward_trust_compatibility=comparison.backward_trust_compatibility,
                backward_error_compatibility=comparison.backward_error_compatibility,
            )
        )
    index, why = parsed.choose(curve)
    point, new = curve[index], curve[0]
    reason = (
        f"old_weight {point.old_weight:g} is {why}: dev accuracy {point.accuracy:.4f} "
        f"(new model {new.accuracy:.4f}), NFR {point.negative_flip_rate:.4f} "
        f"(new model {new.negative_flip_rate:.4f}), on {labels.shape[0]} dev samples."
    )
    if added_zero:
        reason += " old_weight 0 (the new model) was added to the grid as the reference."
    return WeightSelection(
        rule=str(parsed),
        chosen=point.old_weight,
        curve=tuple(curve),
        new_accuracy=new.accuracy,
        reason=reason,
        dev_size=int(labels.shape[0]),
    )


def predict_labels(model: nn.Module, data: LabeledSplit, batch_size: int = 256) -> np.ndarray:
    """The argmax predictions int64 [N] of ``model`` on ``data``, in eval mode and without
    gradients, batch by batch on the model's device; the model's train/eval mode is restored."""
    labels = split_labels(data)
    batch_size = _positive_int(batch_size, "batch_size")
    inputs = data.inputs
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    chunks = []
    try:
        with torch.no_grad():
            for start in range(0, labels.shape[0], batch_size):
                batch = inputs[start : start + batch_size]
                if isinstance(batch, torch.Tensor):
                    batch = batch.to(device)
                output = model(batch)
                if not isinstance(output, torch.Tensor) or output.ndim != 2:
                    got = (
                        f"shape {tuple(output.shape)}"
                        if isinstance(output, torch.Tensor)
                        else type(output).__name__
                    )
                    raise InputError(
                        f"{type(model).__name__} returned {got}; expected scores [batch, classes]."
                    )
                chunks.append(output.argmax(dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(chunks).numpy().astype(np.int64)


def interpolation_candidates(
    old_model: nn.Module,
    new_models: nn.Module | Sequence[nn.Module],
    *,
    weights: Sequence[float] | None = None,
    fisher: Mapping[str, torch.Tensor] | None = None,
    policy: MergePolicy | None = None,
) -> Callable[[float], nn.Module]:
    """A ``make_candidate(old_weight) -> nn.Module`` for :func:`select_old_weight`.

    Each call copies the first new model and loads θ(α) = α θ_old + (1 − α) θ̄_new into it
    (θ̄_new: the soup of ``new_models`` with soup ``weights``, uniform by default; Fisher
    weighting with ``fisher``, a mapping from parameter name to the old model's diagonal
    Fisher information). ``policy``: the :class:`~flipless.merge.policy.MergePolicy` that
    :func:`~flipless.merge.interpolate.interpolate` takes (new-class rows, rules, layer
    schedule, integer buffers); each candidate is ``policy.with_old_weight(α)``. The models'
    weights are read at each call. In-memory and minimal: BatchNorm statistics are
    interpolated, not re-estimated.
    """
    news = [new_models] if isinstance(new_models, nn.Module) else list(new_models)
    for what, model in [("old_model", old_model)] + [
        (f"new model {i}", m) for i, m in enumerate(news)
    ]:
        if not isinstance(model, nn.Module):
            raise InputError(f"{what} is {type(model).__name__}; expected a torch.nn.Module.")
    soup_weights(len(news), weights)  # checks the soup's weights now, not at the first call
    if policy is not None and not isinstance(policy, MergePolicy):
        raise InputError(f"policy is a {type(policy).__name__}; expected a MergePolicy.")
    base = policy if policy is not None else MergePolicy(old_weight=0.0)
    if fisher is not None:
        fisher = align_fisher_names(fisher, old_model.state_dict())
    check_sources(
        open_source(old_model),
        [open_source(model) for model in news],
        open_source(fisher) if fisher is not None else None,
    )
    base.check_names(old_model.state_dict())

    def make_candidate(old_weight: float) -> nn.Module:
        state = interpolate(
            old_model.state_dict(),
            [model.state_dict() for model in news],
            policy=base.with_old_weight(check_old_weight(old_weight)),
            weights=weights,
            fisher=fisher,
        )
        candidate = copy.deepcopy(news[0])
        candidate.load_state_dict(state)
        return candidate

    return make_candidate


def _check_grid(grid: Sequence[float]) -> tuple[list[float], bool]:
    """The grid sorted, with 0 added when missing (and whether it was)."""
    if isinstance(grid, (str, bytes)) or not isinstance(grid, Sequence) or not grid:
        raise InputError(f"grid={grid!r}; expected a non-empty sequence of old-weights in [0, 1].")
    values = []
    for value in grid:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise InputError(f"grid holds {value!r}; expected numbers in [0, 1].")
        values.append(check_old_weight(value, "a grid value"))
    ordered = sorted(values)
    repeated = sorted({a for a, b in itertools.pairwise(ordered) if a == b})
    if repeated:
        raise InputError(f"grid repeats {first_few(repeated)}; expected each old-weight once.")
    if ordered[0] == 0.0:
        return ordered, False
    return [0.0, *ordered], True


def split_labels(data: Any) -> np.ndarray:
    """The labels [N] of a split (N ≥ 1, one per input), or an InputError."""
    if not isinstance(data, LabeledSplit):
        raise InputError(
            f"the split is {type(data).__name__}; expected a LabeledData (anything with "
            "`inputs` and `labels`), e.g. scenario.validation."
        )
    labels = to_numpy(data.labels, "labels of the split")
    if labels.ndim != 1 or labels.shape[0] == 0 or len(data.inputs) != labels.shape[0]:
        raise InputError(
            f"the split has {len(data.inputs)} inputs and labels of shape {labels.shape}; "
            "expected one label per input and at least one sample."
        )
    return labels


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name}={value!r}; expected a positive integer.")
    return int(value)
