"""Flip metrics against the old model as stateful ``keras.metrics.Metric`` objects.

Each metric keeps the four outcome counts of the samples seen since the last reset (old
right/wrong × new right/wrong, int32 variables summed over batches) and derives its rate from
them, so an epoch's value is the dataset-level ratio, never a mean of per-batch ratios
(BackwardCompatibilityML averaged per-batch BTC/BEC). The definitions are those of
:func:`flipless.compare` (METHODS.md §1):

=====================================  ======================================  ==============
class                                  rate                                    NaN when
=====================================  ======================================  ==============
:class:`NegativeFlipRate`              #(old right, new wrong) / N             N = 0
:class:`PositiveFlipRate`              #(old wrong, new right) / N             N = 0
:class:`BackwardTrustCompatibility`    #(both right) / #(old right)            old never right
:class:`BackwardErrorCompatibility`    #(both wrong) / #(new wrong)  (KDD'20)  new never wrong
=====================================  ======================================  ==============

A zero denominator gives NaN (not 0); :meth:`counts` says which count was zero. Counts are
not weighted by Keras sample weights (a flip is a flip). ``update_state(labels,
new_predictions, old_predictions)``: predictions are scores [N, C] (logits or
probabilities; the argmax is the answer) or predicted labels [N].
:class:`flipless.keras.CompatibleModel` creates and updates all four against its old model.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
from keras import ops

from flipless.errors import MismatchError
from flipless.keras.terms import Tensor, as_labels, static_shape

#: The four outcome counts, indexed by the outcome code 2 · 1[old wrong] + 1[new wrong].
OUTCOMES = ("both_right", "old_right_new_wrong", "old_wrong_new_right", "both_wrong")


def _answers(predictions: Tensor, role: str) -> Tensor:
    predictions = ops.convert_to_tensor(predictions)
    rank = len(static_shape(predictions))
    if rank == 2:
        return ops.cast(ops.argmax(predictions, axis=1), "int32")
    if rank == 1:
        return as_labels(predictions)
    raise MismatchError(
        f"{role} predictions have shape {static_shape(predictions)}; expected scores [N, C] "
        "or predicted labels [N]."
    )


def outcome_counts(labels: Tensor, new_predictions: Tensor, old_predictions: Tensor) -> Tensor:
    """How many samples of a batch fall in each outcome of :data:`OUTCOMES`, as int32 [4]."""
    truth = as_labels(labels)
    if static_shape(truth)[1:] == (1,):
        truth = ops.reshape(truth, (-1,))
    new_answers = _answers(new_predictions, "new")
    old_answers = _answers(old_predictions, "old")
    shapes = [static_shape(values) for values in (truth, new_answers, old_answers)]
    sizes = {shape[0] for shape in shapes if shape} - {None}
    if len(shapes[0]) != 1 or len(sizes) > 1:
        raise MismatchError(
            f"labels {shapes[0]}, new {shapes[1]} and old {shapes[2]} predictions; expected "
            "one label and one prediction of each model per sample."
        )
    new_wrong = ops.cast(ops.not_equal(new_answers, truth), "int32")
    old_wrong = ops.cast(ops.not_equal(old_answers, truth), "int32")
    return ops.sum(ops.one_hot(2 * old_wrong + new_wrong, len(OUTCOMES), dtype="int32"), axis=0)


class _FlipCountMetric(keras.metrics.Metric):
    """The four outcome counts; a subclass names the numerator and denominator of its rate."""

    numerator: ClassVar[tuple[str, ...]]
    denominator: ClassVar[tuple[str, ...]]
    default_name: ClassVar[str]

    def __init__(self, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name or self.default_name, **kwargs)
        self.outcome_counts = self.add_variable(
            shape=(len(OUTCOMES),), initializer="zeros", dtype="int32", name="outcome_counts"
        )

    def update_state(
        self, labels: Tensor, new_predictions: Tensor, old_predictions: Tensor
    ) -> None:
        """Add the outcomes of one batch to the counts."""
        self.add_counts(outcome_counts(labels, new_predictions, old_predictions))

    def add_counts(self, counts: Tensor) -> None:
        """Add outcome counts [4] computed once by :func:`outcome_counts` (shared by metrics)."""
        self.outcome_counts.assign_add(ops.cast(counts, "int32"))

    def counts(self) -> dict[str, int]:
        """The four outcome counts as Python ints (outside a compiled step)."""
        values = ops.convert_to_numpy(self.outcome_counts)
        return {outcome: int(count) for outcome, count in zip(OUTCOMES, values, strict=True)}

    def _total(self, outcomes: tuple[str, ...]) -> Tensor:
        counts = ops.cast(self.outcome_counts, "float32")
        return sum(counts[OUTCOMES.index(outcome)] for outcome in outcomes)

    def result(self) -> Tensor:
        """numerator / denominator as float32; NaN when the denominator is 0."""
        numerator, denominator = self._total(self.numerator), self._total(self.denominator)
        safe = ops.where(denominator > 0, denominator, ops.ones_like(denominator))
        return ops.where(
            denominator > 0, numerator / safe, ops.full_like(denominator, float("nan"))
        )


class NegativeFlipRate(_FlipCountMetric):
    """NFR = #(old right, new wrong) / N (Yan et al., CVPR 2021)."""

    default_name = "negative_flip_rate"
    numerator = ("old_right_new_wrong",)
    denominator = OUTCOMES


class PositiveFlipRate(_FlipCountMetric):
    """PFR = #(old wrong, new right) / N."""

    default_name = "positive_flip_rate"
    numerator = ("old_wrong_new_right",)
    denominator = OUTCOMES


class BackwardTrustCompatibility(_FlipCountMetric):
    """BTC = #(both right) / #(old right) (Bansal et al., AAAI 2019; Srivastava et al., KDD 2020)."""

    default_name = "backward_trust_compatibility"
    numerator = ("both_right",)
    denominator = ("both_right", "old_right_new_wrong")


class BackwardErrorCompatibility(_FlipCountMetric):
    """BEC = #(both wrong) / #(new wrong), the KDD 2020 definition.

    BackwardCompatibilityML's code divides by the old model's errors instead; flipless's
    ``backward_error_compatibility_bcml`` (from :func:`flipless.compare`) gives that number.
    """

    default_name = "backward_error_compatibility"
    numerator = ("both_wrong",)
    denominator = ("both_wrong", "old_right_new_wrong")
