"""Dataset-level flip counts and every rate derived from them.

Counts come first; each rate is a ratio of counts, computed once from the whole data (never
a mean of per-batch ratios). A rate whose denominator is zero is NaN, and :meth:`FlipCounts.rate`
says why. Definitions (notation of METHODS.md §1; c_o, c_n correctness of the old and new model):

====================================  =========================================  =======================
rate                                  definition                                 source
====================================  =========================================  =======================
accuracy_old, accuracy_new            #c_o / N, #c_n / N
negative_flip_rate (NFR)              #(c_o ∧ ¬c_n) / N                          Yan et al., CVPR 2021
positive_flip_rate (PFR)              #(¬c_o ∧ c_n) / N
negative_flip_impact (NFI)            #NF / #¬c_n                                Xie et al., ACL 2021
positive_flip_impact (PFI)            #PF / #c_n
relative_negative_flip_rate           NFR / (acc_old · (1 − acc_new))            Yan et al., CVPR 2021
backward_trust_compatibility (BTC)    #(c_o ∧ c_n) / #c_o                        Bansal et al., AAAI 2019
backward_error_compatibility (BEC)    #(¬c_o ∧ ¬c_n) / #¬c_n                     Srivastava et al., KDD 2020
backward_error_compatibility_bcml     #(¬c_o ∧ ¬c_n) / #¬c_o                     BackwardCompatibilityML's code
====================================  =========================================  =======================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from flipless.errors import InputError
from flipless.metrics.outcomes import NEW_CORRECT, NUM_OUTCOMES, OLD_CORRECT, SAME_ANSWER


@dataclass(frozen=True)
class Rate:
    """A ratio of counts; ``value`` is NaN (and ``reason`` says why) when the denominator is 0."""

    name: str
    value: float
    numerator: int
    denominator: int
    reason: str | None = None

    @property
    def defined(self) -> bool:
        return self.reason is None


#: Short labels used in tables and the command line.
RATE_LABELS: dict[str, str] = {
    "accuracy_old": "accuracy (old)",
    "accuracy_new": "accuracy (new)",
    "negative_flip_rate": "NFR",
    "positive_flip_rate": "PFR",
    "negative_flip_impact": "NFI",
    "positive_flip_impact": "PFI",
    "relative_negative_flip_rate": "relative NFR",
    "backward_trust_compatibility": "BTC",
    "backward_error_compatibility": "BEC",
    "backward_error_compatibility_bcml": "BEC (BCML code)",
}


@dataclass(frozen=True)
class FlipCounts:
    """How many samples fall in each old/new outcome; the rates are properties derived from them."""

    total: int
    both_correct: int
    negative_flips: int
    positive_flips: int
    both_wrong_same: int
    both_wrong_different: int

    def __post_init__(self) -> None:
        parts = [getattr(self, f.name) for f in fields(self) if f.name != "total"]
        if any(part < 0 for part in parts) or sum(parts) != self.total:
            raise InputError(
                f"Inconsistent flip counts {parts} with total {self.total}; expected non-negative "
                "counts that add up to the total."
            )

    @classmethod
    def from_outcomes(cls, outcomes: np.ndarray) -> FlipCounts:
        """Build from the 8 outcome-code counts of :mod:`flipless.metrics.outcomes`."""
        counts = [int(c) for c in np.asarray(outcomes).reshape(NUM_OUTCOMES)]
        both = OLD_CORRECT | NEW_CORRECT
        return cls(
            total=sum(counts),
            both_correct=sum(c for code, c in enumerate(counts) if code & both == both),
            negative_flips=sum(c for code, c in enumerate(counts) if code & both == OLD_CORRECT),
            positive_flips=sum(c for code, c in enumerate(counts) if code & both == NEW_CORRECT),
            both_wrong_same=counts[SAME_ANSWER],
            both_wrong_different=counts[0],
        )

    # Derived counts -----------------------------------------------------------------------
    @property
    def old_correct(self) -> int:
        return self.both_correct + self.negative_flips

    @property
    def new_correct(self) -> int:
        return self.both_correct + self.positive_flips

    @property
    def both_wrong(self) -> int:
        return self.both_wrong_same + self.both_wrong_different

    @property
    def old_wrong(self) -> int:
        return self.total - self.old_correct

    @property
    def new_wrong(self) -> int:
        return self.total - self.new_correct

    # Rates ---------------------------------------------------------------------------------
    def rate(self, name: str) -> Rate:
        """The named rate with its numerator, denominator and, when undefined, the reason."""
        no_samples = "there are no samples"
        old_none_right = "the old model got no sample right"
        new_no_errors = "the new model made no errors"
        definitions: dict[str, tuple[int, int, str]] = {
            "accuracy_old": (self.old_correct, self.total, no_samples),
            "accuracy_new": (self.new_correct, self.total, no_samples),
            "negative_flip_rate": (self.negative_flips, self.total, no_samples),
            "positive_flip_rate": (self.positive_flips, self.total, no_samples),
            "negative_flip_impact": (self.negative_flips, self.new_wrong, new_no_errors),
            "positive_flip_impact": (
                self.positive_flips,
                self.new_correct,
                "the new model got no sample right",
            ),
            "relative_negative_flip_rate": (
                self.negative_flips * self.total,
                self.old_correct * self.new_wrong,
                old_none_right if self.old_correct == 0 else new_no_errors,
            ),
            "backward_trust_compatibility": (self.both_correct, self.old_correct, old_none_right),
            "backward_error_compatibility": (self.both_wrong, self.new_wrong, new_no_errors),
            "backward_error_compatibility_bcml": (
                self.both_wrong,
                self.old_wrong,
                "the old model made no errors",
            ),
        }
        if name not in definitions:
            raise InputError(f"Unknown rate {name!r}; expected one of {sorted(definitions)}.")
        numerator, denominator, reason = definitions[name]
        if denominator == 0:
            return Rate(name, math.nan, numerator, denominator, reason)
        return Rate(name, numerator / denominator, numerator, denominator)

    def rates(self) -> dict[str, Rate]:
        """Every rate, keyed by name, in the order of :data:`RATE_LABELS`."""
        return {name: self.rate(name) for name in RATE_LABELS}

    @property
    def accuracy_old(self) -> float:
        return self.rate("accuracy_old").value

    @property
    def accuracy_new(self) -> float:
        return self.rate("accuracy_new").value

    @property
    def accuracy_delta(self) -> float:
        """accuracy_new − accuracy_old = (#PF − #NF) / N."""
        if self.total == 0:
            return math.nan
        return (self.positive_flips - self.negative_flips) / self.total

    @property
    def negative_flip_rate(self) -> float:
        return self.rate("negative_flip_rate").value

    @property
    def positive_flip_rate(self) -> float:
        return self.rate("positive_flip_rate").value

    @property
    def negative_flip_impact(self) -> float:
        return self.rate("negative_flip_impact").value

    @property
    def positive_flip_impact(self) -> float:
        return self.rate("positive_flip_impact").value

    @property
    def relative_negative_flip_rate(self) -> float:
        return self.rate("relative_negative_flip_rate").value

    @property
    def backward_trust_compatibility(self) -> float:
        return self.rate("backward_trust_compatibility").value

    @property
    def backward_error_compatibility(self) -> float:
        return self.rate("backward_error_compatibility").value

    @property
    def backward_error_compatibility_bcml(self) -> float:
        return self.rate("backward_error_compatibility_bcml").value

    def as_dict(self) -> dict[str, int]:
        """The stored counts (the rates are derived, not stored)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
