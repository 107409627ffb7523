"""The parts a :class:`~flipless.metrics.comparison.Comparison` is made of, besides its class table.

Per-slice outcome counts and per-sample outcomes. They stand below the comparison so that its
JSON form (:mod:`flipless.metrics.schema`) can build them without knowing the class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from flipless.errors import InputError
from flipless.metrics.counts import FlipCounts
from flipless.metrics.outcomes import negative_flip_mask, positive_flip_mask
from flipless.validation import first_few


@dataclass(frozen=True, eq=False)
class SliceTable:
    """Outcome counts per group of one slice column: ``outcomes[g]`` counts group ``groups[g]``."""

    name: str
    groups: tuple[Any, ...]
    outcomes: np.ndarray

    def counts(self, group: Any) -> FlipCounts:
        """The flip counts of one group."""
        if group not in self.groups:
            raise InputError(
                f"Slice {self.name!r} has no group {group!r}; its groups are "
                f"{first_few(list(self.groups))}."
            )
        return FlipCounts.from_outcomes(self.outcomes[self.groups.index(group)])


@dataclass(frozen=True, eq=False)
class Instances:
    """Per-sample outcomes, aligned by row: what each model said and whether it flipped.

    ``sample_ids`` is None when the samples are identified by their row number.
    """

    labels: np.ndarray
    old_pred: np.ndarray
    new_pred: np.ndarray
    codes: np.ndarray
    sample_ids: np.ndarray | None = None
    old_confidence: np.ndarray | None = None
    new_confidence: np.ndarray | None = None

    @property
    def ids(self) -> np.ndarray:
        """The sample ids, or the row numbers when none were given."""
        return np.arange(self.codes.shape[0]) if self.sample_ids is None else self.sample_ids

    @property
    def negative_flip(self) -> np.ndarray:
        return negative_flip_mask(self.codes)

    @property
    def positive_flip(self) -> np.ndarray:
        return positive_flip_mask(self.codes)

    @property
    def old_correct(self) -> np.ndarray:
        return (self.codes & 1).astype(bool)

    @property
    def new_correct(self) -> np.ndarray:
        return (self.codes & 2).astype(bool)
