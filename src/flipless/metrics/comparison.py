"""The :class:`Comparison` of an old and a new model, and :func:`compare`, which builds it.

A comparison stores counts (per true class, per slice group, and the flip matrix) and,
optionally, the per-instance outcomes. Every rate is derived from the counts on demand, so a
comparison built from streamed counts (:mod:`flipless.metrics.streaming`) or read back from
JSON (:mod:`flipless.metrics.schema`) gives exactly the same numbers as the one-shot function.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from flipless.errors import InputError, MismatchError
from flipless.metrics.counts import FlipCounts
from flipless.metrics.instance_file import top_regression_rows
from flipless.metrics.outcomes import (
    NUM_OUTCOMES,
    flip_pairs,
    group_outcomes,
    tally,
)
from flipless.metrics.outputs import compact_classes, correctness, read_outputs
from flipless.metrics.parts import Instances, SliceTable
from flipless.metrics.restriction import OldClassRestriction, restrict_to_old_classes
from flipless.metrics.schema import (
    comparison_from_dict,
    comparison_to_dict,
    read_comparison,
    write_comparison,
)
from flipless.metrics.significance import Significance, significance
from flipless.validation import check_same_length, first_few, to_group_labels

#: Per-group columns of :meth:`Comparison.per_class` and :meth:`Comparison.per_slice`.
GROUP_RATES = (
    "accuracy_old",
    "accuracy_new",
    "negative_flip_rate",
    "positive_flip_rate",
    "backward_trust_compatibility",
    "backward_error_compatibility",
)


def outcome_frame(outcomes: np.ndarray, index: pd.Index) -> pd.DataFrame:
    """Counts and rates per group from a [G, 8] outcome table.

    ``share_of_negative_flips`` is the group's part of all negative flips (sums to 1).
    """
    rows = [FlipCounts.from_outcomes(row) for row in outcomes]
    all_negative = sum(row.negative_flips for row in rows)
    frame = pd.DataFrame(
        {
            "support": [row.total for row in rows],
            "old_correct": [row.old_correct for row in rows],
            "new_correct": [row.new_correct for row in rows],
            "negative_flips": [row.negative_flips for row in rows],
            "positive_flips": [row.positive_flips for row in rows],
            **{name: [row.rate(name).value for row in rows] for name in GROUP_RATES},
            "share_of_negative_flips": [
                row.negative_flips / all_negative if all_negative else np.nan for row in rows
            ],
        },
        index=index,
    )
    return frame


class Comparison:
    """What an update from an old to a new model changed, counted over one evaluation set.

    Args:
        class_outcomes: [K, 8] counts of the outcome codes (see :mod:`~flipless.metrics.outcomes`)
            per true class; everything dataset-level is their column sum.
        flip_matrix: [K, K] counts of negative flips by (old answer, new answer); when None,
            it is counted from ``instances`` on first use.
        class_names: optional names of the K classes.
        top_k: correctness is "the true class is in the top k".
        slices: outcome counts per group, for each slice column.
        instances: per-sample outcomes, when kept.
        confidence, n_bootstrap, seed: settings of :attr:`significance`.
        restriction: when the counts cover only the examples whose label the old model knew
            (``compare(..., old_classes=...)``): which classes, and how many were left out.
        listed_regressions: the top regressions a summary JSON listed, kept for a comparison
            read without its instances (so that writing it again lists them again).

    The counts' rates are available directly: ``comparison.negative_flip_rate``,
    ``comparison.backward_trust_compatibility``, ``comparison.rate("...")`` (with the reason
    when undefined), ``comparison.negative_flips`` and so on (see :class:`FlipCounts`).
    A comparison is read-only: build a new one rather than changing its arrays.
    (It is a plain class, not a dataclass, so that ``torchmetrics`` returns it unchanged
    from ``Metric.compute``.)
    """

    def __init__(
        self,
        class_outcomes: np.ndarray,
        flip_matrix: np.ndarray | None = None,
        class_names: tuple[str, ...] | None = None,
        top_k: int = 1,
        slices: dict[str, SliceTable] | None = None,
        instances: Instances | None = None,
        confidence: float = 0.95,
        n_bootstrap: int = 2000,
        seed: int = 0,
        restriction: OldClassRestriction | None = None,
        listed_regressions: list[dict[str, Any]] | None = None,
    ) -> None:
        k = class_outcomes.shape[0]
        if class_outcomes.ndim != 2 or class_outcomes.shape[1] != NUM_OUTCOMES:
            raise InputError(
                f"Outcome table of shape {class_outcomes.shape}; expected (K, {NUM_OUTCOMES})."
            )
        if flip_matrix is None and instances is None:
            raise InputError("A comparison needs its flip matrix or its per-instance outcomes.")
        if flip_matrix is not None and flip_matrix.shape != (k, k):
            raise InputError(
                f"Flip matrix of shape {flip_matrix.shape} for {k} classes; expected ({k}, {k})."
            )
        if class_names is not None and len(class_names) != k:
            raise MismatchError(
                f"{len(class_names)} class names for {k} classes; expected one name per class."
            )
        self.class_outcomes = class_outcomes
        self._flip_matrix = flip_matrix
        self.class_names = tuple(class_names) if class_names is not None else None
        self.top_k = top_k
        self.slices = dict(slices or {})
        self.instances = instances
        self.confidence = confidence
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self.restriction = restriction
        self.listed_regressions = listed_regressions

    @property
    def flip_matrix(self) -> np.ndarray:
        """[K, K] negative flips by (old answer, new answer)."""
        if self._flip_matrix is None:
            kept = self._require_instances()
            self._flip_matrix = flip_pairs(
                kept.old_pred, kept.new_pred, kept.codes, self.num_classes
            )
        return self._flip_matrix

    @property
    def num_classes(self) -> int:
        return int(self.class_outcomes.shape[0])

    @cached_property
    def counts(self) -> FlipCounts:
        """Dataset-level counts: the column sums of :attr:`class_outcomes`."""
        return FlipCounts.from_outcomes(self.class_outcomes.sum(axis=0))

    def __getattr__(self, name: str) -> Any:
        # Delegate counts and rates (negative_flip_rate, both_correct, rate(), …) to ``counts``.
        if name.startswith("_") or name in ("counts", "class_outcomes"):
            raise AttributeError(name)
        try:
            return getattr(self.counts, name)
        except AttributeError:
            raise AttributeError(f"'Comparison' object has no attribute {name!r}") from None

    @cached_property
    def significance(self) -> Significance:
        """McNemar's test and seeded bootstrap intervals for NFR, the accuracy delta and more."""
        return significance(
            self.class_outcomes.sum(axis=0), self.confidence, self.n_bootstrap, self.seed
        )

    # Views -----------------------------------------------------------------------------------
    def class_label(self, index: int) -> str:
        """The name of class ``index`` (its number when no names were given)."""
        return self.class_names[index] if self.class_names else str(index)

    def per_class(self) -> pd.DataFrame:
        """Counts and rates per true class (rates within the class; NaN where undefined)."""
        index = pd.Index([self.class_label(k) for k in range(self.num_classes)], name="class")
        return outcome_frame(self.class_outcomes, index)

    def per_slice(self, name: str | None = None) -> pd.DataFrame:
        """Counts and rates per group of one slice column, or of all of them (a two-level index)."""
        if name is not None and name not in self.slices:
            raise InputError(
                f"No slice named {name!r}; this comparison has slices {sorted(self.slices)}."
            )
        names = [name] if name is not None else list(self.slices)
        frames = []
        for slice_name in names:
            table = self.slices[slice_name]
            index = pd.MultiIndex.from_tuples(
                [(slice_name, group) for group in table.groups], names=["slice", "group"]
            )
            frames.append(outcome_frame(table.outcomes, index))
        if not frames:
            return outcome_frame(np.zeros((0, NUM_OUTCOMES), np.int64), pd.Index([], name="group"))
        return pd.concat(frames)

    def flip_matrix_frame(self) -> pd.DataFrame:
        """The flip matrix with class labels: rows the old answer, columns the new answer."""
        labels = [self.class_label(k) for k in range(self.num_classes)]
        return pd.DataFrame(
            self.flip_matrix,
            index=pd.Index(labels, name="old answer"),
            columns=pd.Index(labels, name="new answer"),
        )

    def _require_instances(self) -> Instances:
        if self.instances is None:
            raise InputError(
                "This comparison keeps counts only (it was streamed, or built with "
                "keep_instances=False); per-instance results need flipless.compare(...) on the "
                "predictions."
            )
        return self.instances

    def negative_flip_ids(self) -> np.ndarray:
        """Ids of the samples the update broke (old right, new wrong), in input order."""
        instances = self._require_instances()
        return instances.ids[instances.negative_flip]

    def positive_flip_ids(self) -> np.ndarray:
        """Ids of the samples the update fixed (old wrong, new right), in input order."""
        instances = self._require_instances()
        return instances.ids[instances.positive_flip]

    def instance_frame(self, which: str = "all") -> pd.DataFrame:
        """Per-sample flags; ``which`` is 'all', 'negative_flips', 'positive_flips' or 'errors'."""
        instances = self._require_instances()
        masks = {
            "all": None,
            "negative_flips": instances.negative_flip,
            "positive_flips": instances.positive_flip,
            "errors": ~(instances.old_correct & instances.new_correct),
        }
        if which not in masks:
            raise InputError(f"which={which!r}; expected one of {sorted(masks)}.")
        mask = masks[which]
        return self._rows_frame(instances, None if mask is None else np.flatnonzero(mask))

    def top_regressions(self, n: int = 10) -> pd.DataFrame:
        """The ``n`` negative flips to look at first: where the new model is most confident.

        Without scores, the first ``n`` negative flips in input order.
        """
        instances = self._require_instances()
        return self._rows_frame(instances, top_regression_rows(instances, n))

    def _rows_frame(self, instances: Instances, rows: np.ndarray | None) -> pd.DataFrame:
        """The columns of :meth:`instance_frame` for ``rows`` (None: every row), in that order."""

        def picked(values: np.ndarray) -> np.ndarray:
            return values if rows is None else values[rows]

        kept = Instances(
            labels=picked(instances.labels),
            old_pred=picked(instances.old_pred),
            new_pred=picked(instances.new_pred),
            codes=picked(instances.codes),
        )
        columns: dict[str, np.ndarray] = {
            "id": picked(instances.ids),
            "label": kept.labels,
            "old_pred": kept.old_pred,
            "new_pred": kept.new_pred,
            "old_correct": kept.old_correct,
            "new_correct": kept.new_correct,
            "negative_flip": kept.negative_flip,
            "positive_flip": kept.positive_flip,
        }
        if instances.old_confidence is not None:
            columns["old_confidence"] = picked(instances.old_confidence)
        if instances.new_confidence is not None:
            columns["new_confidence"] = picked(instances.new_confidence)
        frame = pd.DataFrame(columns)
        if self.class_names:
            for column in ("label", "old_pred", "new_pred"):
                frame[column + "_name"] = np.asarray(self.class_names, dtype=object)[frame[column]]
        return frame

    # Serialisation ---------------------------------------------------------------------------
    def to_dict(self, instances: bool = True) -> dict[str, Any]:
        """The JSON-ready document (schema in :mod:`flipless.metrics.schema`)."""
        return comparison_to_dict(self, instances)

    def to_json(self, path: str | None = None, instances: bool | str = True) -> str:
        """The summary JSON text; written atomically to ``path`` when given.

        With a ``path``, ``instances=True`` also writes every sample's outcome to the Parquet
        file beside it (``c.json`` → ``c.instances.parquet``; a path: there), which the JSON
        names and :meth:`from_json` reads back; ``False`` writes the summary only.
        """
        document = write_comparison(self, path, instances)
        return json.dumps(document, indent=1, allow_nan=False)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Comparison:
        """Rebuild from :meth:`to_dict`'s document (checked against its stored counts)."""
        return comparison_from_dict(document, cls)

    @classmethod
    def from_json(cls, path: str, instances: str | None = None) -> Comparison:
        """Read a comparison written by :meth:`to_json`, with the instances file it names (or
        ``instances``, the path of one) when there is one."""
        return read_comparison(path, cls, instances)


def _slice_columns(slices: Any, size: int) -> dict[str, np.ndarray]:
    if slices is None:
        return {}
    if isinstance(slices, pd.DataFrame):
        slices = {str(column): slices[column] for column in slices.columns}
    elif not isinstance(slices, Mapping):
        slices = {"slice": slices}
    columns = {}
    for name, values in slices.items():
        array = to_group_labels(values, f"slice {name!r}")
        check_same_length({"labels": size, f"slice {name!r}": array.shape[0]})
        columns[str(name)] = array
    return columns


def slice_table(name: str, values: np.ndarray, codes: np.ndarray) -> SliceTable:
    """Count outcome codes per group of one slice column.

    Groups are sorted (missing values last); groups of mixed types keep their order of appearance.
    """
    series = pd.Series(values).infer_objects()  # a list [1, None, 2] becomes floats with NaN
    try:
        group_index, groups = pd.factorize(series, sort=True)
    except TypeError:  # mixed types cannot be sorted
        group_index, groups = pd.factorize(series)
    groups = list(groups)
    missing = group_index < 0
    if missing.any():
        group_index = np.where(missing, len(groups), group_index)
        groups.append(series[missing].iloc[0])
    python_groups = tuple(g.item() if isinstance(g, np.generic) else g for g in groups)
    return SliceTable(name, python_groups, group_outcomes(codes, group_index, len(groups)))


def _check_ids(ids: Any, size: int) -> np.ndarray:
    array = to_group_labels(ids, "ids")
    check_same_length({"labels": size, "ids": array.shape[0]})
    duplicated = pd.unique(array[pd.Series(array).duplicated().to_numpy()])
    if duplicated.shape[0]:
        raise InputError(
            f"{duplicated.shape[0]} id(s) occur more than once ({first_few(duplicated)}); "
            "expected one row per sample id."
        )
    return array


def _check_class_names(class_names: Any) -> tuple[str, ...] | None:
    if class_names is None:
        return None
    names = tuple(str(name) for name in class_names)
    if len(set(names)) != len(names):
        raise InputError(f"class_names has duplicates {first_few(names)}; expected unique names.")
    return names


def compare(
    old: Any,
    new: Any,
    labels: Any,
    *,
    ids: Any = None,
    num_classes: int | None = None,
    class_names: Any = None,
    slices: Any = None,
    top_k: int = 1,
    keep_instances: bool = True,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    seed: int = 0,
    old_classes: Any = None,
) -> Comparison:
    """Compare an old and a new model on the same samples.

    Args:
        old, new: predicted class indices [N] or scores [N, C] (logits or probabilities);
            numpy arrays, torch tensors on any device, or lists.
        labels: true class indices [N].
        ids: sample ids [N] (default: the row numbers); must be unique.
        num_classes: K; default from ``class_names``, the scores' width, or the largest index.
        class_names: names of the K classes.
        slices: group labels per sample: one array, a mapping of name → array, or a DataFrame.
        top_k: count a model correct when the true class is among its top k scores.
        keep_instances: keep per-sample outcomes (flipped ids, instance tables).
        confidence, n_bootstrap, seed: settings of the bootstrap intervals.
        old_classes: the classes the old model knows (indices, or names of ``class_names``),
            when the new model knows more: only the examples whose label is one of them are
            counted, and the comparison's :attr:`~Comparison.restriction` says how many were
            left out (:mod:`flipless.metrics.restriction`). Both models' answers stay in the
            new label space.

    Returns:
        A :class:`Comparison`; e.g. ``compare(old, new, y).negative_flip_rate``.
    """
    names = _check_class_names(class_names)
    if names is not None and num_classes is not None and len(names) != num_classes:
        raise MismatchError(
            f"{len(names)} class names but num_classes={num_classes}; expected one name per class."
        )
    if num_classes is None and names is not None:
        num_classes, classes_from = len(names), "class_names"
    else:
        classes_from = "num_classes"
    outputs, label_array, k = read_outputs(
        {"old": old, "new": new}, labels, num_classes, classes_from
    )
    old_out, new_out = outputs["old"], outputs["new"]
    size = label_array.shape[0]
    sample_ids = None if ids is None or not keep_instances else _check_ids(ids, size)
    slice_columns = _slice_columns(slices, size)
    restriction = None
    if old_classes is not None:
        right = correctness(new_out, label_array, top_k, k)
        right = new_out.predicted == label_array if right is None else right
        restriction, keep = restrict_to_old_classes(old_classes, label_array, k, names, right)
        old_out, new_out = old_out.subset(keep), new_out.subset(keep)
        label_array = label_array[keep]
        sample_ids = None if sample_ids is None else sample_ids[keep]
        slice_columns = {name: values[keep] for name, values in slice_columns.items()}
        size = label_array.shape[0]
    if num_classes is None and names is None:
        old_out, new_out, label_array, k, names = compact_classes(old_out, new_out, label_array, k)
    old_correct = correctness(old_out, label_array, top_k, k)
    new_correct = correctness(new_out, label_array, top_k, k)
    codes, class_outcomes = tally(
        old_out.predicted, new_out.predicted, label_array, k, old_correct, new_correct
    )
    slice_tables = {
        name: slice_table(name, values, codes) for name, values in slice_columns.items()
    }
    instances = None
    if keep_instances:
        instances = Instances(
            sample_ids=sample_ids,
            labels=label_array,
            old_pred=old_out.predicted,
            new_pred=new_out.predicted,
            codes=codes,
            old_confidence=old_out.confidence(),
            new_confidence=new_out.confidence(),
        )
    return Comparison(
        class_outcomes=class_outcomes,
        flip_matrix=None
        if keep_instances
        else flip_pairs(old_out.predicted, new_out.predicted, codes, k),
        class_names=names,
        top_k=int(top_k),
        slices=slice_tables,
        instances=instances,
        confidence=confidence,
        n_bootstrap=n_bootstrap,
        seed=seed,
        restriction=restriction,
    )
