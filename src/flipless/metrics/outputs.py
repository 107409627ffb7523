"""What a model said: turn labels, logits or probabilities into predictions and correctness.

A model's outputs are either predicted class indices of shape [N] or scores of shape [N, C]
(logits or probabilities). Scores give the prediction by argmax (first index on ties), top-k
correctness (the true class is correct when fewer than k classes score strictly higher), and
the model's confidence in its answer (softmax of logits; probabilities are used as they are).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from flipless.errors import InputError, MismatchError
from flipless.validation import check_labels, check_num_classes, check_scores, to_numpy

_CHUNK = 1 << 15


@dataclass(frozen=True)
class ModelOutputs:
    """Predictions of one model, plus its scores when it gave any."""

    predicted: np.ndarray
    scores: np.ndarray | None = None

    def top_k_correct(self, labels: np.ndarray, k: int) -> np.ndarray:
        """1[fewer than k classes score strictly higher than the true class], chunked."""
        if self.scores is None:
            raise InputError(f"top_k={k} needs scores of shape [N, C]; this model gave labels only.")
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


def read_model_outputs(
    old: Any,
    new: Any,
    labels: Any,
    num_classes: int | None = None,
) -> tuple[ModelOutputs, ModelOutputs, np.ndarray, int]:
    """Validate old and new outputs against the labels; return them with the number of classes.

    The number of classes is ``num_classes`` if given, else the width of the scores, else
    1 + the largest index seen. Old and new scores of different widths are an error.
    """
    old_raw, new_raw = _raw(old, "old"), _raw(new, "new")
    widths = {name: raw.shape[1] for name, raw in (("old", old_raw), ("new", new_raw)) if raw.ndim == 2}
    if len(set(widths.values())) > 1:
        raise MismatchError(
            f"The old scores have {widths['old']} classes and the new scores {widths['new']}; "
            "expected the same label space. If classes were added, map the old model's classes "
            "into the new label space first."
        )
    if num_classes is not None:
        num_classes = check_num_classes(num_classes, f"num_classes={num_classes}")
        for name, width in widths.items():
            if width != num_classes:
                raise MismatchError(
                    f"The {name} scores have {width} columns but num_classes={num_classes}; "
                    "expected one column per class."
                )
    elif widths:
        num_classes = next(iter(widths.values()))

    label_array = check_labels(labels, "labels", num_classes)
    outputs = []
    for name, raw in (("old", old_raw), ("new", new_raw)):
        if raw.ndim == 2:
            scores = check_scores(raw, f"{name} scores")
            outputs.append(ModelOutputs(scores.argmax(axis=1), scores))
        else:
            outputs.append(ModelOutputs(check_labels(raw, f"{name} predictions", num_classes)))
    if num_classes is None:
        largest = max(int(label_array.max()), *(int(o.predicted.max()) for o in outputs))
        num_classes = check_num_classes(
            largest + 1, f"The labels and predictions (largest index {largest})"
        )
    return outputs[0], outputs[1], label_array, num_classes
