"""Which epoch's model to keep: a stated rule, applied to the validation split only.

=============================  =================================================================
rule                           the kept epoch
=============================  =================================================================
``accuracy``                   highest validation accuracy (ties: lower NFR, then earlier)
``nfr``                        lowest validation negative flip rate (ties: higher accuracy)
``nfr-within:<points>``        lowest NFR among epochs whose accuracy is within ``points`` of the
                               best accuracy (e.g. ``nfr-within:0.005``); ties: higher accuracy
``last``                       the last epoch
=============================  =================================================================

Rules that use the NFR need the old model's validation predictions. The test split is never
looked at: choosing on it would make the reported test numbers optimistic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from flipless.errors import InputError

RULES = ("accuracy", "nfr", "nfr-within", "last")


@dataclass(frozen=True)
class SelectionRule:
    """A parsed rule; :meth:`best` picks an index from per-epoch (accuracy, nfr) pairs."""

    name: str
    tolerance: float = 0.0

    @classmethod
    def parse(cls, text: str) -> SelectionRule:
        name, _, argument = str(text).partition(":")
        if name not in RULES:
            raise InputError(
                f"selection rule {text!r} is unknown; expected one of 'accuracy', 'nfr', "
                "'nfr-within:<accuracy points, e.g. 0.005>', 'last'."
            )
        if name == "nfr-within":
            try:
                tolerance = float(argument)
            except ValueError:
                tolerance = -1.0
            if not 0 <= tolerance <= 1:
                raise InputError(
                    f"selection rule {text!r}: expected 'nfr-within:<x>' with 0 ≤ x ≤ 1 "
                    "(accuracy as a fraction, e.g. 0.005 for half a point)."
                )
            return cls(name, tolerance)
        if argument:
            raise InputError(f"selection rule {name!r} takes no argument; got {text!r}.")
        return cls(name)

    @property
    def needs_nfr(self) -> bool:
        return self.name in ("nfr", "nfr-within")

    def __str__(self) -> str:
        return f"{self.name}:{self.tolerance}" if self.name == "nfr-within" else self.name

    def best(self, accuracy: Sequence[float], nfr: Sequence[float]) -> int:
        """The index of the kept epoch."""
        if not accuracy:
            raise InputError("no epoch to select from.")
        if self.name == "last":
            return len(accuracy) - 1
        if any(math.isnan(x) for x in accuracy):
            raise InputError(
                f"selection rule {self!s} needs the validation accuracy of every epoch, which is "
                "undefined; pass validation_data, or select='last'."
            )
        if self.needs_nfr and any(math.isnan(x) for x in nfr):
            raise InputError(
                f"selection rule {self!s} needs the validation NFR, which is undefined "
                "(no old-model validation predictions, or the old model is never right)."
            )
        epochs = range(len(accuracy))
        if self.name == "accuracy":
            return min(epochs, key=lambda i: (-accuracy[i], _or_zero(nfr[i]), i))
        allowed = [i for i in epochs if accuracy[i] >= max(accuracy) - self.tolerance - 1e-12]
        if self.name == "nfr":
            allowed = list(epochs)
        return min(allowed, key=lambda i: (nfr[i], -accuracy[i], i))


def undominated(accuracy: Sequence[float], nfr: Sequence[float]) -> set[int]:
    """Epochs no other epoch beats on both accuracy and NFR (earlier wins ties; NaN NFR = 0).

    Every rule's choice is among them, but which one wins can change as epochs arrive
    (``nfr-within``), so the loop keeps the weights of all of them.
    """
    points = [(a, _or_zero(n)) for a, n in zip(accuracy, nfr, strict=True)]

    def beats(j: int, i: int) -> bool:
        (acc_j, nfr_j), (acc_i, nfr_i) = points[j], points[i]
        if acc_j >= acc_i and nfr_j <= nfr_i:
            return (acc_j, nfr_j) != (acc_i, nfr_i) or j < i
        return False

    return {i for i in range(len(points)) if not any(beats(j, i) for j in range(len(points)))}


def _or_zero(value: float) -> float:
    return 0.0 if math.isnan(value) else value
