"""Compare two prediction files in one call: read both, join them by id, compare."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from os import PathLike

import pandas as pd

from flipless.errors import InputError
from flipless.io.join import join_by_id
from flipless.io.readers import read_predictions
from flipless.metrics.comparison import Comparison, compare


def compare_files(
    old_path: str | PathLike[str],
    new_path: str | PathLike[str],
    *,
    slices: Sequence[str] = (),
    how: str = "exact",
    top_k: int = 1,
    id_column: str | None = None,
    label_column: str | None = None,
    prediction_column: str | None = None,
    score_columns: str | Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Compare the old and the new model's prediction files, matched by sample id.

    Args:
        old_path, new_path: prediction files (csv, parquet, jsonl, npz, result; see
            :func:`~flipless.io.read_predictions`).
        slices: columns of either file to break the results down by.
        how: ``"exact"`` (both files hold the same ids) or ``"inner"`` (keep shared ids).
        top_k: count a model correct when the true class is among its top k scores.
        id_column, label_column, prediction_column, score_columns, class_names: how to read
            both files (default: detected).
        confidence, n_bootstrap, seed: settings of the bootstrap intervals.

    Returns:
        The :class:`~flipless.Comparison`, with the sample ids of the joined rows.
    """
    options = {
        "id_column": id_column,
        "label_column": label_column,
        "prediction_column": prediction_column,
        "score_columns": score_columns,
        "class_names": class_names,
    }
    joined = join_by_id(
        read_predictions(old_path, **options), read_predictions(new_path, **options), how=how
    )
    comparison = compare(
        joined.old,
        joined.new,
        joined.labels,
        class_names=joined.class_names,
        slices=select_columns(joined.slices, slices),
        top_k=top_k,
        confidence=confidence,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    # The join found the ids unique from their sorted order; compare(ids=...) would check them
    # again with a hash table, so they are attached to the row outcomes here.
    comparison.instances = dataclasses.replace(comparison.instances, sample_ids=joined.ids)
    return comparison


def select_columns(frame: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame | None:
    """The columns ``names`` of ``frame`` (each once), or None when no names are given."""
    if isinstance(names, str):
        names = [names]
    names = list(dict.fromkeys(names))
    missing = [name for name in names if name not in frame.columns]
    if missing:
        available = ", ".join(repr(str(column)) for column in frame.columns) or "(none)"
        raise InputError(
            f"No column {', '.join(map(repr, missing))} to slice by; the files' other columns "
            f"are {available}. Pass slices= (CLI --slice) with one of them."
        )
    return frame[names] if names else None
