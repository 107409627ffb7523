"""More than two versions: the pairwise NFR matrix and cumulative flips along a chain.

For versions v_1 … v_V evaluated on the same samples, with correctness c_v:

* pairwise NFR: ``NFR[a, b] = #(c_a ∧ ¬c_b) / N`` — the row is the old version, the column the
  new one; the diagonal is 0.
* a chain v_1 → v_2 → … → v_V, at each version v_k:
  - ``negative_flips`` / ``positive_flips``: flips of the step v_{k−1} → v_k;
  - ``regressed_since_first``: #(c_1 ∧ ¬c_k), what v_k lost of what v_1 got right;
  - ``ever_negatively_flipped``: samples with at least one negative flip in the steps so far;
  - ``lost_ever_correct``: #(¬c_k ∧ ∨_{j<k} c_j), wrong now although some earlier version was right.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from flipless.errors import InputError
from flipless.metrics.outputs import correctness, read_outputs
from flipless.validation import to_group_labels


def _correctness_matrix(
    predictions: Mapping[str, Any], labels: Any, num_classes: int | None, top_k: int
) -> tuple[list[str], np.ndarray]:
    if not isinstance(predictions, Mapping) or len(predictions) < 2:
        raise InputError(
            "Expected a mapping of at least two version names to their predictions, in order "
            '(for example {"v1": ..., "v2": ..., "v3": ...}).'
        )
    names = [str(name) for name in predictions]
    outputs, label_array, k = read_outputs(
        dict(zip(names, predictions.values(), strict=True)), labels, num_classes
    )
    rows = []
    for name in names:
        top = correctness(outputs[name], label_array, top_k, k)
        rows.append(outputs[name].predicted == label_array if top is None else top)
    return names, np.stack(rows)


def pairwise_negative_flip_rates(
    predictions: Mapping[str, Any],
    labels: Any,
    *,
    num_classes: int | None = None,
    top_k: int = 1,
) -> pd.DataFrame:
    """The V×V matrix of NFR from each version (row, old) to each other version (column, new)."""
    names, correct = _correctness_matrix(predictions, labels, num_classes, top_k)
    as_int = correct.astype(np.int64)
    flips = as_int @ (1 - as_int).T
    index = pd.Index(names, name="old")
    return pd.DataFrame(flips / correct.shape[1], index=index, columns=pd.Index(names, name="new"))


@dataclass(frozen=True, eq=False)
class FlipChain:
    """Per-version flips along v_1 → … → v_V; ``table`` has one row per version."""

    table: pd.DataFrame
    ever_negatively_flipped_ids: np.ndarray


def flip_chain(
    predictions: Mapping[str, Any],
    labels: Any,
    *,
    ids: Any = None,
    num_classes: int | None = None,
    top_k: int = 1,
) -> FlipChain:
    """Cumulative flips along the versions in the mapping's order (see the module docstring)."""
    names, correct = _correctness_matrix(predictions, labels, num_classes, top_k)
    size = correct.shape[1]
    id_array = np.arange(size) if ids is None else to_group_labels(ids, "ids")
    if id_array.shape[0] != size:
        raise InputError(
            f"ids has {id_array.shape[0]} rows for {size} samples; expected one id per sample."
        )
    rows = []
    ever_flipped = np.zeros(size, dtype=bool)
    ever_correct = np.zeros(size, dtype=bool)
    for k, name in enumerate(names):
        current = correct[k]
        previous = correct[k - 1] if k else current
        negative = previous & ~current
        ever_flipped |= negative
        rows.append(
            {
                "version": name,
                "accuracy": float(current.mean()),
                "negative_flips": int(negative.sum()),
                "positive_flips": int((~previous & current).sum()),
                "negative_flip_rate": float(negative.mean()),
                "regressed_since_first": int((correct[0] & ~current).sum()),
                "ever_negatively_flipped": int(ever_flipped.sum()),
                "lost_ever_correct": int((ever_correct & ~current).sum()),
            }
        )
        ever_correct |= current
    table = pd.DataFrame(rows).set_index("version")
    return FlipChain(table, id_array[ever_flipped])
