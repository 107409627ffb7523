"""The output ensemble of several models' prediction files, joined by sample id.

An update without retraining: combine what M models output (Yan et al., "Positive-Congruent
Training", CVPR 2021, found that ensembles flip less; the ``+`` of the
regression-constraint-model-upgrade code). With weights w_m > 0 (all 1 by default) and
W = Σ_m w_m, for each sample:

* ``probabilities``: p̄ = Σ_m w_m p_m / W, the prediction argmax_c p̄_c. A member's scores are
  taken as probabilities when every row is non-negative and sums to 1 within 1e-6, else as
  logits and turned into probabilities by the softmax p_c = exp(z_c) / Σ_k exp(z_k).
* ``logits``: z̄ = Σ_m w_m z_m / W, the prediction argmax_c z̄_c; every member must hold logits
  (a member whose rows are all probability distributions is refused).
* ``vote``: class c gets V_c = Σ_m w_m [ŷ_m = c], each member's ŷ_m being the argmax of its
  scores, or its predicted label when it has no scores; the prediction is the class with the
  largest V_c. A tie (classes within 1e-12 · W of the largest V) is broken by the larger p̄_c
  over the members that have scores, and then by the lower class index. A vote writes no
  scores: they would not be what decided.

Every remaining tie goes to the lowest class index, as ``numpy.argmax``. All files must hold
the same ids (the output keeps the first file's order), the same declared class names, scores
of the same width, and the same true labels where they have them; the output has the true
labels of any file that has them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from flipless.errors import InputError, MismatchError
from flipless.io import PredictionTable, read_predictions, write_predictions
from flipless.validation import first_few

#: How :func:`ensemble` combines the members.
AVERAGES = ("probabilities", "logits", "vote")
#: A row of scores is a probability distribution when it sums to 1 within this.
PROBABILITY_TOLERANCE = 1e-6
#: Vote totals within this share of the weight total of the largest count as tied.
VOTE_TIE_TOLERANCE = 1e-12


@dataclass(frozen=True, eq=False)
class Ensemble:
    """The combined predictions, one row per sample in the first file's order.

    Attributes:
        ids: [N] sample ids.
        labels: int64 [N] true class indices, None when no file has them.
        predicted: int64 [N] the ensemble's classes.
        scores: float64 [N, C] mean probabilities or mean logits; None for a vote.
        scores_kind: ``"probabilities"`` or ``"logits"`` (what ``scores`` are), None for a vote.
        class_names: the class names, None when the files name no classes.
        average: how the members were combined; weights: one per member.
    """

    ids: np.ndarray
    labels: np.ndarray | None
    predicted: np.ndarray
    scores: np.ndarray | None
    scores_kind: str | None
    class_names: tuple[str, ...] | None
    average: str
    weights: tuple[float, ...]

    def write(self, path: str | PathLike[str], overwrite: bool = False) -> Path:
        """Write the ensemble as a prediction file (see :func:`flipless.io.write_predictions`)."""
        return write_predictions(
            path,
            self.ids,
            self.predicted,
            labels=self.labels,
            scores=self.scores,
            scores_kind=self.scores_kind or "probabilities",
            class_names=self.class_names,
            overwrite=overwrite,
        )


def ensemble_files(
    paths: Sequence[str | PathLike[str]],
    *,
    average: str = "probabilities",
    weights: Sequence[float] | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    prediction_column: str | None = None,
    score_columns: str | Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
) -> Ensemble:
    """Read the prediction files ``paths`` (every format :func:`read_predictions` reads) and
    combine them with :func:`ensemble`; the column options apply to every file."""
    options = {
        "id_column": id_column,
        "label_column": label_column,
        "prediction_column": prediction_column,
        "score_columns": score_columns,
        "class_names": class_names,
    }
    return ensemble([read_predictions(path, **options) for path in paths], average, weights)


def ensemble(
    members: Sequence[PredictionTable],
    average: str = "probabilities",
    weights: Sequence[float] | None = None,
) -> Ensemble:
    """Combine two or more models' predictions of the same samples (see the module docstring).

    Raises:
        InputError: fewer than two members, an unknown ``average``, bad weights, repeated ids,
            a member without the scores the average needs, or unknown class names.
        MismatchError: members with other ids, classes, score widths or true labels.
    """
    if average not in AVERAGES:
        raise InputError(
            f"average={average!r}; expected one of {', '.join(AVERAGES)} (CLI --average)."
        )
    if len(members) < 2:
        raise InputError(
            f"an ensemble needs at least two prediction files; got {len(members)}. Pass the "
            "files of every member model."
        )
    weights = _checked_weights(weights, len(members))
    rows = _aligned_rows(members)
    names = _shared_class_names(members)
    width = _score_width(members, names)
    vocabulary = _vocabulary(members, names, width)
    labels = _agreed_labels(members, rows, vocabulary)
    scores = [None if m.scores is None else m.scores[r] for m, r in zip(members, rows, strict=True)]
    if average == "vote":
        votes = [
            s.argmax(axis=1) if s is not None else _indices(m.predicted[r], m, vocabulary)
            for m, r, s in zip(members, rows, scores, strict=True)
        ]
        count = width if width is not None else _class_count(votes, labels, vocabulary)
        _check_votes(members, votes, count)
        probabilities = [_probabilities(s) for s in scores if s is not None]
        scored = [w for w, s in zip(weights, scores, strict=True) if s is not None]
        tie_break = _weighted_mean(probabilities, scored) if probabilities else None
        predicted = _vote(votes, weights, count, tie_break)
        combined, kind = None, None
    else:
        missing = [m.source for m, s in zip(members, scores, strict=True) if s is None]
        if missing:
            raise InputError(
                f"averaging {average} needs scores in every file, but {', '.join(missing)} "
                "hold(s) only predicted labels; write them with scores (flipless predict "
                "--logits) or use --average vote."
            )
        if average == "logits":
            _check_logits(members, scores)
            combined = _weighted_mean(scores, weights)
        else:
            combined = _weighted_mean([_probabilities(s) for s in scores], weights)
        predicted, kind = combined.argmax(axis=1).astype(np.int64), average
    return Ensemble(
        ids=members[0].ids,
        labels=labels,
        predicted=predicted,
        scores=combined,
        scores_kind=kind,
        class_names=vocabulary,
        average=average,
        weights=tuple(weights),
    )


# Combining -------------------------------------------------------------------------------------
def _weighted_mean(arrays: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Σ_m w_m a_m / Σ_m w_m in float64."""
    total = np.zeros_like(arrays[0], dtype=np.float64)
    for weight, values in zip(weights, arrays, strict=True):
        total += weight * values
    return total / math.fsum(weights)


def _is_probabilities(scores: np.ndarray) -> bool:
    """Every row non-negative and summing to 1 within :data:`PROBABILITY_TOLERANCE`."""
    return bool(
        (scores >= 0).all() and (np.abs(scores.sum(axis=1) - 1.0) <= PROBABILITY_TOLERANCE).all()
    )


def _probabilities(scores: np.ndarray) -> np.ndarray:
    """The scores when they are probabilities, else their softmax (float64, max-shifted)."""
    if _is_probabilities(scores):
        return scores.astype(np.float64)
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _check_logits(members: Sequence[PredictionTable], scores: Sequence[np.ndarray]) -> None:
    probabilities = [m.source for m, s in zip(members, scores, strict=True) if _is_probabilities(s)]
    if probabilities:
        raise InputError(
            f"{', '.join(probabilities)} hold(s) probabilities (every row sums to 1), not "
            "logits; averaging logits needs logits in every file (flipless predict --logits), "
            "or use --average probabilities."
        )


def _vote(
    votes: Sequence[np.ndarray],
    weights: Sequence[float],
    count: int,
    tie_break: np.ndarray | None,
) -> np.ndarray:
    """The class with the most weight; ties by the larger mean probability, then lowest index."""
    size = votes[0].shape[0]
    totals = np.zeros((size, count), dtype=np.float64)
    for weight, classes in zip(weights, votes, strict=True):
        totals[np.arange(size), classes] += weight
    tolerance = VOTE_TIE_TOLERANCE * math.fsum(weights)
    leading = totals >= totals.max(axis=1, keepdims=True) - tolerance
    if tie_break is None:
        return leading.argmax(axis=1).astype(np.int64)
    return np.where(leading, tie_break, -np.inf).argmax(axis=1).astype(np.int64)


# Checks and alignment --------------------------------------------------------------------------
def _checked_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    if weights is None:
        return [1.0] * count
    values = list(weights)
    if len(values) != count:
        raise InputError(
            f"{len(values)} weight(s) for {count} prediction files; expected one weight per "
            "file, in the files' order (CLI --weights 1,2,…)."
        )
    bad = [
        value
        for value in values
        if isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ]
    if bad:
        raise InputError(f"weights {first_few(bad)}; expected finite numbers > 0.")
    return [float(value) for value in values]


def _aligned_rows(members: Sequence[PredictionTable]) -> list[np.ndarray]:
    """Each member's row of each of the first member's ids; every member holds the same ids."""
    first = members[0]
    rows = []
    for member in members:
        repeated = pd.unique(member.ids[pd.Series(member.ids).duplicated().to_numpy()])
        if repeated.size:
            raise InputError(
                f"{member.source} has {repeated.size} id(s) on more than one row "
                f"({first_few(repeated)}); expected one row per sample."
            )
        position = pd.Index(member.ids).get_indexer(first.ids)
        only_first = first.ids[position < 0]
        extra = len(member) - int((position >= 0).sum())
        if only_first.size or extra:
            only_member = member.ids[pd.Index(first.ids).get_indexer(member.ids) < 0]
            raise MismatchError(
                f"{member.source} and {first.source} hold different ids: {only_first.size} only "
                f"in {first.source} ({first_few(only_first)}) and {only_member.size} only in "
                f"{member.source} ({first_few(only_member)}); an ensemble needs every model's "
                "prediction of every sample."
            )
        rows.append(position)
    return rows


def _shared_class_names(members: Sequence[PredictionTable]) -> tuple[str, ...] | None:
    declared = [m for m in members if m.class_names is not None]
    for member in declared[1:]:
        if member.class_names != declared[0].class_names:
            raise MismatchError(
                f"{member.source} declares the classes {first_few(member.class_names)} but "
                f"{declared[0].source} declares {first_few(declared[0].class_names)}; an "
                "ensemble needs one label space in one order."
            )
    return declared[0].class_names if declared else None


def _score_width(members: Sequence[PredictionTable], names: tuple[str, ...] | None) -> int | None:
    widths = [(m.source, m.scores.shape[1]) for m in members if m.scores is not None]
    if names is not None:
        widths.insert(0, ("the class names", len(names)))
    if len({width for _, width in widths}) > 1:
        listed = ", ".join(f"{what}: {width}" for what, width in widths)
        raise MismatchError(
            f"the files count different numbers of classes ({listed}); expected one score per "
            "class of the same label space in every file."
        )
    return widths[0][1] if widths else None


def _vocabulary(
    members: Sequence[PredictionTable], names: tuple[str, ...] | None, width: int | None
) -> tuple[str, ...] | None:
    """The declared class names, or the sorted names in the files when they use names."""
    values = [v for m in members for v in (m.labels, m.predicted) if v is not None]
    text = [v for v in values if v.dtype == object]
    if names is not None or not text:
        return names
    if width is not None or len(text) < len(values):
        raise InputError(
            "some files give class names and others class indices or scores, and none declares "
            "the class names; write a <file>.classes.json list next to each file, or pass "
            "class_names= (CLI --class-names)."
        )
    return tuple(sorted(set().union(*(v.tolist() for v in text))))


def _indices(
    values: np.ndarray, member: PredictionTable, vocabulary: tuple[str, ...] | None
) -> np.ndarray:
    """Class names as indices into ``vocabulary``; indices as they are (checked ≥ 0)."""
    if values.dtype == object:
        positions = pd.Index(vocabulary).get_indexer(values)
        unknown = pd.unique(values[positions < 0])
        if unknown.size:
            raise InputError(
                f"{member.source} holds {unknown.size} name(s) that are not class names "
                f"({first_few(unknown)}); the classes are {first_few(vocabulary)}."
            )
        return positions.astype(np.int64)
    if (values < 0).any():
        raise InputError(f"{member.source} holds negative class indices; expected indices ≥ 0.")
    return values


def _agreed_labels(
    members: Sequence[PredictionTable],
    rows: Sequence[np.ndarray],
    vocabulary: tuple[str, ...] | None,
) -> np.ndarray | None:
    labelled = [
        (m, _indices(m.labels[r], m, vocabulary))
        for m, r in zip(members, rows, strict=True)
        if m.labels is not None
    ]
    if not labelled:
        return None
    first, labels = labelled[0]
    for member, other in labelled[1:]:
        differ = np.flatnonzero(other != labels)
        if differ.size:
            ids = members[0].ids
            raise MismatchError(
                f"{member.source} and {first.source} disagree on the true label of "
                f"{differ.size} sample(s) (ids {first_few(ids[differ])}); expected the same "
                "labels for the same ids."
            )
    return labels


def _check_votes(
    members: Sequence[PredictionTable], votes: Sequence[np.ndarray], count: int
) -> None:
    for member, classes in zip(members, votes, strict=True):
        outside = classes >= count
        if outside.any():
            raise InputError(
                f"{member.source} predicts class indices {first_few(pd.unique(classes[outside]))}"
                f", outside the {count} classes of the other files and class names."
            )


def _class_count(
    votes: Sequence[np.ndarray], labels: np.ndarray | None, vocabulary: tuple[str, ...] | None
) -> int:
    """The number of classes when no file has scores: named, or the largest index + 1."""
    if vocabulary is not None:
        return len(vocabulary)
    largest = max(int(v.max()) for v in [*votes, *([labels] if labels is not None else [])])
    return largest + 1
