"""Flips counted only where the old model could have been right: a growing label set.

When the new model knows classes the old one never had, an example whose true label is such a
class is wrong for the old model whatever it says: it can never be a negative flip, and it is a
positive flip whenever the new model gets it right. Counting it would dilute the negative flip
rate (NFR = #NF / N with a larger N) and inflate the positive one. ``compare(...,
old_classes=[...])`` therefore counts only the examples whose label is among the old model's
classes (O):

    kept = {i : y_i ∈ O},   NFR = #{i ∈ kept : old right, new wrong} / |kept|,

and every other rate likewise over ``kept``. The comparison records what was left out and why
(:class:`OldClassRestriction`, in its JSON under ``"restriction"`` and in the printed summary).
The models' answers are not restricted: a new model that answers a new class for an old-class
example is wrong there, and so is an old model that answers a class outside O.

The restriction also keeps the new model's accuracy over **all** the examples
(:attr:`OldClassRestriction.accuracy_new_all`): the new classes are part of what the new model
is for, so choosing an epoch or an old-weight by accuracy uses it (the training loop and
:func:`~flipless.merge.selection.select_old_weight` do), while the flips count on O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flipless.errors import FileFormatError, InputError
from flipless.validation import first_few

REASON = "their label is a class the old model does not know"


@dataclass(frozen=True)
class OldClassRestriction:
    """Counts restricted to examples labelled with one of ``old_classes`` (class indices).

    ``excluded`` examples were left out because ``REASON``; ``total`` is the number given;
    ``new_correct``, how many of all ``total`` the new model got right (None when unknown).
    """

    old_classes: tuple[int, ...]
    num_classes: int
    excluded: int
    total: int
    new_correct: int | None = None

    @property
    def accuracy_new_all(self) -> float:
        """The new model's accuracy over all the examples, left-out ones included (NaN when
        there are none or the count is unknown)."""
        if self.new_correct is None or self.total == 0:
            return float("nan")
        return self.new_correct / self.total

    @property
    def kept(self) -> int:
        """The examples counted."""
        return self.total - self.excluded

    def describe(self) -> str:
        """A sentence for summaries: what was counted, what was left out and why."""
        return (
            f"counted {self.kept:,} of {self.total:,} examples: {self.excluded:,} left out, "
            f"{REASON} (it knows {len(self.old_classes)} of {self.num_classes} classes)"
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the comparison document's ``"restriction"``)."""
        return {
            "old_classes": list(self.old_classes),
            "num_classes": self.num_classes,
            "excluded": self.excluded,
            "total": self.total,
            "new_correct": self.new_correct,
            "reason": REASON,
        }

    @classmethod
    def from_dict(cls, stored: Any, counted: int) -> OldClassRestriction:
        """Read :meth:`to_dict`'s form back, checked against the ``counted`` examples."""
        try:
            restriction = cls(
                old_classes=tuple(int(k) for k in stored["old_classes"]),
                num_classes=int(stored["num_classes"]),
                excluded=int(stored["excluded"]),
                total=int(stored["total"]),
                new_correct=None
                if stored.get("new_correct") is None
                else int(stored["new_correct"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise FileFormatError(
                f"The comparison's 'restriction' is malformed ({error!r}); expected "
                "old_classes, num_classes, excluded and total."
            ) from error
        correct = restriction.new_correct
        if correct is not None and not 0 <= correct <= restriction.total:
            raise FileFormatError(
                f"The comparison's 'restriction' says the new model got {correct} of "
                f"{restriction.total} examples right; the file was edited or corrupted."
            )
        if restriction.excluded < 0 or restriction.kept != counted:
            raise FileFormatError(
                f"The comparison's 'restriction' says {restriction.kept} examples were counted "
                f"but its counts hold {counted}; the file was edited or corrupted."
            )
        return restriction


def old_class_indices(
    old_classes: Sequence[int | str], num_classes: int, class_names: Sequence[str] | None
) -> tuple[int, ...]:
    """Class indices or names (matched against ``class_names``) → sorted unique indices."""
    if isinstance(old_classes, (str, bytes)) or not isinstance(old_classes, (Sequence, range)):
        raise InputError(
            f"old_classes={old_classes!r}; expected a sequence of class indices or class names."
        )
    index_of = {name: k for k, name in enumerate(class_names or ())}
    indices = []
    for item in old_classes:
        if isinstance(item, str):
            if item not in index_of:
                hint = f"one of {first_few(list(index_of))}" if index_of else "class_names="
                raise InputError(
                    f"old_classes names {item!r}, which is not a class; expected {hint}."
                )
            indices.append(index_of[item])
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= item < num_classes:
                raise InputError(
                    f"old_classes holds {item}; expected class indices in [0, {num_classes})."
                )
            indices.append(int(item))
        else:
            raise InputError(f"old_classes holds {item!r}; expected a class index or name.")
    if not indices:
        raise InputError("old_classes is empty; expected at least one class the old model knows.")
    if len(set(indices)) != len(indices):
        raise InputError(f"old_classes={list(old_classes)!r} repeats a class; list each once.")
    return tuple(sorted(indices))


def restrict_to_old_classes(
    old_classes: Sequence[int | str],
    labels: np.ndarray,
    num_classes: int,
    class_names: Sequence[str] | None,
    new_correct: np.ndarray,
) -> tuple[OldClassRestriction, np.ndarray]:
    """The restriction and the bool mask [N] of the examples it keeps (label ∈ old classes);
    ``new_correct`` (bool [N]) says where the new model is right, over all the examples."""
    known = old_class_indices(old_classes, num_classes, class_names)
    keep = np.isin(labels, known)
    restriction = OldClassRestriction(
        old_classes=known,
        num_classes=int(num_classes),
        excluded=int((~keep).sum()),
        total=int(labels.shape[0]),
        new_correct=int(np.count_nonzero(new_correct)),
    )
    return restriction, keep
