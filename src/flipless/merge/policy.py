"""Which tensors are interpolated, and with which old-weight: the rules of one merge.

A :class:`MergePolicy` states every choice that backward-compatible weight interpolation
(METHODS.md §3) leaves open, so that a merge is reproducible from its record
(:meth:`MergePolicy.describe`):

* the **old-weight** α of each tensor: the first matching ``rules`` pattern (an fnmatch glob,
  e.g. ``("head.*", 0.0)``), else the ``layer_schedule`` (a regex capturing the layer index;
  α goes linearly from ``first`` at the lowest layer found to ``last`` at the highest, the
  mergekit "gradient"), else ``old_weight``;
* **integer buffers** (BatchNorm's ``num_batches_tracked``, position ids, …) are never
  averaged: they are copied from the ``integer_buffers`` side, "new" (the first new model of
  a soup) or "old";
* **new-class rows** (add-classes updates): for each classifier tensor named in
  ``new_class_rows`` (weight [C, D], bias [C]) the listed rows are copied from the new models'
  soup mean θ̄_new instead of interpolated, since the old model never learned those classes.
"""

from __future__ import annotations

import dataclasses
import operator
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Any, Literal

from flipless.errors import FliplessWarning, InputError, MismatchError
from flipless.merge.tensors import check_old_weight
from flipless.validation import first_few

IntegerSide = Literal["new", "old"]


def _check_rows(rows: Any, tensor_name: str) -> tuple[int, ...]:
    """Row indices as a tuple of distinct ints ≥ 0."""
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Iterable):
        raise InputError(
            f"new_class_rows[{tensor_name!r}] is {rows!r}; expected a sequence of row indices."
        )
    values, bad = [], []
    for value in rows:
        try:
            index = operator.index(value)  # int, numpy integer, 0-d integer tensor
        except TypeError:
            index = -1
        if isinstance(value, bool) or index < 0:
            bad.append(value)
        else:
            values.append(index)
    if bad:
        raise InputError(
            f"new_class_rows[{tensor_name!r}] holds {first_few(bad)}; expected class (row) "
            "indices as whole numbers ≥ 0."
        )
    if len(set(values)) != len(values):
        raise InputError(f"new_class_rows[{tensor_name!r}] repeats rows; list each class once.")
    return tuple(sorted(values))


@dataclass(frozen=True)
class MergePolicy:
    """The old-weight of every tensor and how integer buffers and new-class rows are treated.

    Attributes:
        old_weight: α of every tensor no rule or schedule covers, in [0, 1].
        rules: ``(pattern, old_weight)`` pairs; the first pattern (``fnmatch`` glob, case
            sensitive, ``*`` crosses dots) matching a tensor's name gives its α. A mapping is
            read in its order.
        layer_schedule: ``(regex, first, last)``: the regex (``re.search``) has one group that
            captures a layer index, e.g. ``r"encoder\\.layer\\.(\\d+)\\."``; the k-th of the n
            distinct layers found among the tensor names gets
            α = first + (last − first) · k / (n − 1) (``first`` when n = 1).
        integer_buffers: "new" or "old": the side whose non-floating tensors are kept.
        new_class_rows: classifier tensor name → rows copied from θ̄_new (see the module
            docstring; :func:`new_class_rows_from_names` derives them from class names).
    """

    old_weight: float
    rules: Sequence[tuple[str, float]] = ()
    layer_schedule: tuple[str, float, float] | None = None
    integer_buffers: IntegerSide = "new"
    new_class_rows: Mapping[str, Sequence[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "old_weight", check_old_weight(self.old_weight))
        pairs = self.rules.items() if isinstance(self.rules, Mapping) else self.rules
        rules = []
        for position, rule in enumerate(pairs):
            if not isinstance(rule, (tuple, list)) or len(rule) != 2:
                raise InputError(
                    f"rules[{position}] is {rule!r}; expected a (name pattern, old_weight) pair "
                    "such as ('head.*', 0.0)."
                )
            pattern, weight = rule
            if not isinstance(pattern, str) or not pattern:
                raise InputError(f"rules[{position}]: the pattern {pattern!r} must be a glob.")
            rules.append((pattern, check_old_weight(weight, f"the old_weight of rule {pattern!r}")))
        object.__setattr__(self, "rules", tuple(rules))
        if self.layer_schedule is not None:
            object.__setattr__(self, "layer_schedule", self._check_schedule(self.layer_schedule))
        if self.integer_buffers not in ("new", "old"):
            raise InputError(
                f"integer_buffers={self.integer_buffers!r}; expected 'new' or 'old', the side "
                "whose integer buffers (e.g. BatchNorm's num_batches_tracked) are kept."
            )
        if not isinstance(self.new_class_rows, Mapping):
            raise InputError(
                f"new_class_rows is a {type(self.new_class_rows).__name__}; expected a mapping "
                "classifier tensor name → row indices, e.g. {'head.weight': [8, 9]}."
            )
        rows = {str(name): _check_rows(r, name) for name, r in self.new_class_rows.items()}
        object.__setattr__(self, "new_class_rows", MappingProxyType(rows))

    @staticmethod
    def _check_schedule(schedule: Any) -> tuple[str, float, float]:
        if not isinstance(schedule, (tuple, list)) or len(schedule) != 3:
            raise InputError(
                f"layer_schedule is {schedule!r}; expected (regex, first, last), e.g. "
                r"(r'encoder\.layer\.(\d+)\.', 0.5, 0.1)."
            )
        pattern, first, last = schedule
        try:
            groups = re.compile(pattern).groups
        except (re.error, TypeError) as exc:
            raise InputError(
                f"layer_schedule: {pattern!r} is not a regular expression: {exc}."
            ) from exc
        if groups != 1:
            raise InputError(
                f"layer_schedule: the regex {pattern!r} has {groups} groups; expected exactly one, "
                r"capturing the layer index, e.g. r'layers\.(\d+)\.'."
            )
        return (
            pattern,
            check_old_weight(first, "layer_schedule's first old_weight"),
            check_old_weight(last, "layer_schedule's last old_weight"),
        )

    def layer_of(self, name: str) -> int | None:
        """The layer index the schedule's regex captures in ``name`` (None: no match)."""
        if self.layer_schedule is None:
            return None
        found = re.search(self.layer_schedule[0], name)
        if found is None:
            return None
        captured = found.group(1)
        if captured is None or not captured.isdigit():
            raise InputError(
                f"layer_schedule: the regex {self.layer_schedule[0]!r} captured {captured!r} in "
                f"{name!r}; expected a layer index (digits). Capture only the number, e.g. (\\d+)."
            )
        return int(captured)

    def layers_in(self, names: Iterable[str]) -> tuple[int, ...]:
        """The distinct layer indices the schedule finds among ``names``, ascending."""
        found = {self.layer_of(name) for name in names}
        return tuple(sorted(layer for layer in found if layer is not None))

    def old_weight_for(self, name: str, layers: Sequence[int] = ()) -> float:
        """α of the tensor ``name``: its first matching rule, else the schedule, else the default.

        ``layers`` are the layer indices the schedule spans (:meth:`layers_in` of all the
        tensor names); :meth:`old_weights` passes them for you.
        """
        for pattern, weight in self.rules:
            if fnmatchcase(name, pattern):
                return weight
        layer = self.layer_of(name)
        if layer is None:
            return self.old_weight
        if layer not in layers:
            raise InputError(
                f"{name!r} is layer {layer} of the schedule, which is not among the layers "
                f"{list(layers)} given; pass layers=policy.layers_in(all tensor names)."
            )
        _, first, last = self.layer_schedule  # type: ignore[misc]
        if len(layers) == 1:
            return first
        position = sorted(layers).index(layer) / (len(layers) - 1)
        return first + (last - first) * position

    def old_weights(self, names: Iterable[str]) -> dict[str, float]:
        """α of every tensor in ``names`` (the schedule spans the layers found among them)."""
        names = list(names)
        layers = self.layers_in(names)
        return {name: self.old_weight_for(name, layers) for name in names}

    def check_names(self, names: Iterable[str]) -> None:
        """Check the policy against a model's tensor names before merging.

        A ``new_class_rows`` tensor the model lacks is a :class:`MismatchError`; a rule or a
        schedule that matches no tensor is a :class:`FliplessWarning` (a typo, most often).
        """
        names = list(names)
        unknown = [name for name in self.new_class_rows if name not in names]
        if unknown:
            raise MismatchError(
                f"new_class_rows names tensors the models do not have: {first_few(unknown)}; "
                "use state-dict names such as 'head.weight' and 'head.bias'."
            )
        unused = [p for p, _ in self.rules if not any(fnmatchcase(n, p) for n in names)]
        if unused:
            warnings.warn(
                f"the merge rules {first_few(unused)} match no tensor name; check the patterns "
                "(fnmatch globs on state-dict names, e.g. 'head.*').",
                FliplessWarning,
                stacklevel=3,
            )
        if self.layer_schedule is not None and not self.layers_in(names):
            warnings.warn(
                f"the layer schedule's regex {self.layer_schedule[0]!r} matches no tensor name; "
                "every tensor gets the rules' or the default old_weight.",
                FliplessWarning,
                stacklevel=3,
            )

    def with_old_weight(self, old_weight: float) -> MergePolicy:
        """The same policy with another default old-weight (a candidate of a grid search):
        rules, layer schedule, integer buffers and new-class rows stay as they are."""
        return dataclasses.replace(self, old_weight=old_weight)

    def describe(self) -> dict[str, Any]:
        """The policy as a JSON-able dict, for records."""
        schedule = None
        if self.layer_schedule is not None:
            pattern, first, last = self.layer_schedule
            schedule = {"pattern": pattern, "first": first, "last": last}
        return {
            "old_weight": self.old_weight,
            "rules": [[pattern, weight] for pattern, weight in self.rules],
            "layer_schedule": schedule,
            "integer_buffers": self.integer_buffers,
            "new_class_rows": {name: list(rows) for name, rows in self.new_class_rows.items()},
        }


def new_class_rows_from_names(
    old_names: Sequence[str], new_names: Sequence[str], tensor_names: Sequence[str]
) -> dict[str, tuple[int, ...]]:
    """Rows of the classes in ``new_names`` but not in ``old_names``, for each classifier tensor.

    Both models' classifiers are indexed in ``new_names`` order (the old model was built with
    the full label space; the rows of the classes it was not trained on are untrained);
    ``old_names`` are the classes the old model was trained on, each of which must be among
    ``new_names``. ``tensor_names`` are the classifier tensors, e.g.
    ``("head.weight", "head.bias")``. Returns ``{tensor name: ascending row indices}``, ready for
    ``MergePolicy(new_class_rows=...)``.
    """
    old, new = list(old_names), list(new_names)
    for what, names in (("old", old), ("new", new)):
        if not all(isinstance(name, str) for name in names):
            raise InputError(f"the {what} class names must be strings; got {first_few(names)}.")
        repeated = sorted(name for name, count in Counter(names).items() if count > 1)
        if repeated:
            raise InputError(
                f"the {what} class names repeat {first_few(repeated)}; give each class once."
            )
    missing = [name for name in old if name not in new]
    if missing:
        raise MismatchError(
            f"{len(missing)} old class name(s) are not among the new ones: {first_few(missing)}; "
            "the new label space must contain every old class (rename them to match)."
        )
    if isinstance(tensor_names, str) or not tensor_names:
        raise InputError(
            f"tensor_names is {tensor_names!r}; expected the classifier tensors' names, e.g. "
            "('head.weight', 'head.bias')."
        )
    known = set(old)
    rows = tuple(index for index, name in enumerate(new) if name not in known)
    return {str(name): rows for name in tensor_names}
