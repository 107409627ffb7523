"""What a model said: turn labels, logits or probabilities into predictions and correctness.

A model's outputs are either predicted class indices of shape [N] or scores of shape [N, C]
(logits or probabilities). Scores give the prediction by argmax (first index on ties), top-k
correctness (the true class is correct when fewer than k classes score strictly higher), and
the model's confidence in its answer (softmax of logits; probabilities are used as they are).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from flipless.errors import InputError, MismatchError
from flipless.validation import (
    check_index_range,
    check_num_classes,
    check_same_length,
    check_scores,
    index_array,
    to_numpy,
)

_CHUNK = 1 << 15
#: Class indices given bare (no class names, no scores, no ``num_classes``) whose largest
#: value exceeds this are renumbered by the classes present (see :func:`compact_classes`).
DENSE_CLASS_LIMIT = 1024
#: The most distinct classes bare class indices may hold: per-class tables and the K × K
#: flip matrix grow with K.
MAX_PRESENT_CLASSES = 100_000


@dataclass(frozen=True)
class ModelOutputs:
    """Predictions of one model, plus its scores when it gave any."""

    predicted: np.ndarray
    scores: np.ndarray | None = None

    def subset(self, keep: np.ndarray) -> ModelOutputs:
        """The outputs of the examples where ``keep`` (bool [N]) is True."""
        return ModelOutputs(
            self.predicted[keep], None if self.scores is None else self.scores[keep]
        )

    def top_k_correct(self, labels: np.ndarray, k: int) -> np.ndarray:
        """1[fewer than k classes score strictly higher than the true class], chunked."""
        if self.scores is None:
            raise InputError(
                f"top_k={k} needs scores of shape [N, C]; this model gave labels only."
            )
        correct = np.empty(labels.shape[0], dtype=bool)
        for start in range(0, labels.shape[0], _CHUNK):
            rows = self.scores[start : start + _CHUNK]
            label = labels[start : start + _CHUNK]
            true_score = rows[np.arange(rows.shape[0]), label][:, None]
            correct[start : start + _CHUNK] = (rows > true_score).sum(axis=1) < k
        return correct

    def confidence(self) -> np.ndarray | None:
        """Probability of the predicted class (float32), or None without scores."""
        if self.scores is None:
            return None
        out = np.empty(self.predicted.shape[0], dtype=np.float32)
        are_probabilities = looks_like_probabilities(self.scores)
        for start in range(0, out.shape[0], _CHUNK):
            rows = self.scores[start : start + _CHUNK].astype(np.float64)
            if not are_probabilities:
                rows = np.exp(rows - rows.max(axis=1, keepdims=True))
                rows /= rows.sum(axis=1, keepdims=True)
            out[start : start + _CHUNK] = rows.max(axis=1)
        return out


def looks_like_probabilities(scores: np.ndarray) -> bool:
    """True when every row lies in [0, 1] and sums to 1 (within 1e-3): probabilities, not logits."""
    return bool(
        scores.min() >= 0.0
        and scores.max() <= 1.0
        and np.allclose(scores.sum(axis=1), 1.0, atol=1e-3)
    )


def _raw(values: Any, name: str) -> np.ndarray:
    array = to_numpy(values, name)
    if array.ndim not in (1, 2):
        raise InputError(
            f"{name} has shape {tuple(array.shape)}; expected class indices [N] or scores [N, C]."
        )
    return array


def read_outputs(
    outputs: dict[str, Any],
    labels: Any,
    num_classes: int | None = None,
    classes_from: str = "num_classes",
) -> tuple[dict[str, ModelOutputs], np.ndarray, int]:
    """Validate the outputs of several models (keyed by name) against the labels.

    The number of classes is ``num_classes`` if given, else the width of the scores, else
    1 + the largest index seen. Scores of different widths are an error. ``classes_from`` names
    where ``num_classes`` came from, for messages. Returns the outputs, the labels as int64 and
    the number of classes.
    """
    raws = {name: _raw(values, name) for name, values in outputs.items()}
    widths = {name: raw.shape[1] for name, raw in raws.items() if raw.ndim == 2}
    if len(set(widths.values())) > 1:
        listed = ", ".join(f"{name} has {width}" for name, width in widths.items())
        raise MismatchError(
            f"Scores of different widths ({listed} classes); expected the same label space. If "
            "classes were added, map the old model's classes into the new label space first."
        )
    if num_classes is not None:
        num_classes = check_num_classes(num_classes, f"{classes_from} ({num_classes} classes)")
        for name, width in widths.items():
            if width != num_classes:
                raise MismatchError(
                    f"The {name} scores have {width} columns but {classes_from} gives "
                    f"{num_classes} classes; "
                    "expected one column per class."
                )
    elif widths:
        num_classes = next(iter(widths.values()))
        classes_from = "the width of the scores"

    label_array, label_largest = index_array(labels, "labels")
    indices = {}
    scores = {}
    for name, raw in raws.items():
        if raw.ndim == 2:
            scores[name] = check_scores(raw, f"{name} scores")
        else:
            indices[name] = index_array(raw, f"{name} predictions")
    if num_classes is None:
        largest = max([label_largest, *(top for _, top in indices.values())])
        num_classes = check_num_classes(
            largest + 1, f"The labels and predictions (largest index {largest})"
        )
    check_index_range(label_array, label_largest, "labels", num_classes, classes_from)
    for name, (array, top) in indices.items():
        check_index_range(array, top, f"{name} predictions", num_classes, classes_from)
    read = {
        name: ModelOutputs(scores[name].argmax(axis=1), scores[name])
        if name in scores
        else ModelOutputs(indices[name][0])
        for name in raws
    }
    check_same_length(
        {"labels": label_array.shape[0]}
        | {name: output.predicted.shape[0] for name, output in read.items()}
    )
    return read, label_array, num_classes


def compact_classes(
    old: ModelOutputs, new: ModelOutputs, labels: np.ndarray, num_classes: int
) -> tuple[ModelOutputs, ModelOutputs, np.ndarray, int, tuple[str, ...] | None]:
    """Bare class indices renumbered by the classes present, when the largest is far out.

    The number of classes of bare indices is 1 + the largest index, so one stray index
    (``5000000`` in a 50-row file) would make every per-class array that long. Above
    :data:`DENSE_CLASS_LIMIT` classes, the classes present in the labels and both models'
    answers (sorted) become 0 … P − 1 and their original indices the class names; memory then
    follows the rows. More than :data:`MAX_PRESENT_CLASSES` present classes is an InputError.
    Returns the outputs, labels, number of classes and class names (None when unchanged).
    """
    if num_classes <= DENSE_CLASS_LIMIT or old.scores is not None or new.scores is not None:
        return old, new, labels, num_classes, None
    values = np.concatenate([labels, old.predicted, new.predicted])
    present, codes = np.unique(values, return_inverse=True)
    if present.size > MAX_PRESENT_CLASSES:
        raise InputError(
            f"The labels and predictions hold {present.size:,} distinct class indices (largest "
            f"{num_classes - 1:,}); expected at most {MAX_PRESENT_CLASSES:,} classes. Check the "
            "label and prediction columns, or pass class_names (CLI: --class-names) naming "
            "every class."
        )
    if present.size == num_classes:
        return old, new, labels, num_classes, None
    size = labels.shape[0]
    codes = codes.astype(np.int64, copy=False)
    names = tuple(str(index) for index in present.tolist())
    return (
        ModelOutputs(codes[size : 2 * size]),
        ModelOutputs(codes[2 * size :]),
        codes[:size],
        int(present.size),
        names,
    )


def correctness(
    output: ModelOutputs, labels: np.ndarray, top_k: int, num_classes: int
) -> np.ndarray | None:
    """Top-k correctness, or None for top-1 (where correctness is ``predicted == labels``)."""
    whole = (
        isinstance(top_k, numbers.Real)
        and not isinstance(top_k, bool)
        and math.isfinite(top_k)
        and int(top_k) == top_k
    )
    if not whole or not 1 <= top_k < num_classes:
        raise InputError(
            f"top_k={top_k!r}; expected an integer from 1 to {num_classes - 1} for "
            f"{num_classes} classes."
        )
    return None if top_k == 1 else output.top_k_correct(labels, int(top_k))
