"""Finding the roles of columns and arrays: ids, labels, predictions and scores.

Fields are found by name (case-insensitive) unless the caller names them; scores come from one
column or array of score lists, or from numbered columns ``logit_0, logit_1, …``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from flipless.errors import FileFormatError
from flipless.validation import first_few

ID_NAMES = ("id", "ids", "sample_id", "sample_ids", "idx", "index", "uid")
LABEL_NAMES = ("label", "labels", "gt", "y", "target", "true", "true_label")
PREDICTION_NAMES = (
    "pred",
    "preds",
    "prediction",
    "predictions",
    "predicted",
    "predicted_label",
    "y_pred",
)
SCORE_NAMES = ("logits", "outputs", "scores", "probs", "probabilities")
SCORE_PREFIXES = ("logit", "logits", "score", "scores", "prob", "probs", "output")

_NUMBERED = re.compile(r"(?P<prefix>[A-Za-z]+)_(?P<number>[0-9]+)")
OPTIONS = {
    "id": "id_column= (CLI --id-col)",
    "label": "label_column= (CLI --label-col)",
    "prediction": "prediction_column= (CLI --pred-col)",
    "scores": "score_columns= (CLI --score-cols)",
}


@dataclass(frozen=True)
class Chosen:
    """The field names a caller gave (None: detect)."""

    id: str | None
    label: str | None
    prediction: str | None
    scores: str | Sequence[str] | None


class FrameColumns:
    """The columns of a csv or jsonl file read into a DataFrame, named as text."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._frame = frame.set_axis([str(name) for name in frame.columns], axis=1)
        self.names: list[str] = list(self._frame.columns)
        self.rows = int(self._frame.shape[0])

    def values(self, name: str) -> np.ndarray:
        """One column as a numpy array."""
        return self._frame[name].to_numpy()

    def frame(self, names: list[str]) -> pd.DataFrame:
        """Some columns as a DataFrame indexed 0 … N-1."""
        return self._frame[names].reset_index(drop=True)


class ArrowColumns:
    """The columns of a parquet file read into an Arrow table, named as text.

    Numbers, booleans and text become numpy arrays straight from Arrow (integers without
    missing values without a copy); other types (dictionaries, lists, dates) and every
    DataFrame go through pandas with the file's pandas metadata (extension dtypes such as
    ``Int64``), as ``pandas.read_parquet`` would read them. A DataFrame's index that pandas
    stored as a column is not one of the names, as ``pandas.read_parquet`` makes it the index.
    """

    def __init__(self, table: pa.Table) -> None:
        self._table = table
        stored = (table.schema.pandas_metadata or {}).get("index_columns", [])
        index_columns = {name for name in stored if isinstance(name, str)}
        self.names: list[str] = [name for name in table.column_names if name not in index_columns]
        self.rows = int(table.num_rows)

    def values(self, name: str) -> np.ndarray:
        """One column as a numpy array (missing numbers as NaN, missing text as None)."""
        column = self._table.column(name)
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
            return column.to_numpy()
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return column.to_numpy(zero_copy_only=False)
        return self.frame([name])[name].to_numpy()

    def frame(self, names: list[str]) -> pd.DataFrame:
        """Some columns as a DataFrame indexed 0 … N-1."""
        return self._table.select(names).to_pandas()


def find(
    source: str,
    names: Sequence[str],
    candidates: tuple[str, ...],
    given: str | None,
    role: str,
    field: str,
) -> str | None:
    """The field holding ``role``: ``given`` (which must exist), else the one detected by name."""
    if given is not None:
        if given not in names:
            raise FileFormatError(
                f"{source} has no {field} {given!r} (the {role}); its {field}s are "
                f"{listing(names)}. Pass {OPTIONS[role]} with one of them."
            )
        return given
    found = [name for name in names if name.lower() in candidates]
    if len(found) > 1:
        raise FileFormatError(
            f"{source} has several {field}s that could hold the {role} ({', '.join(found)}); "
            f"pass {OPTIONS[role]} to pick one."
        )
    return found[0] if found else None


def listing(names: Sequence[str]) -> str:
    return ", ".join(repr(name) for name in names) if names else "(none)"


def score_columns(source: str, names: list[str], chosen: Chosen) -> str | list[str] | None:
    """One list column of scores, or numeric columns one per class; None when there are none."""
    if isinstance(chosen.scores, str):
        find(source, names, SCORE_NAMES, chosen.scores, "scores", "column")
        return chosen.scores
    if chosen.scores is not None:
        missing = [name for name in chosen.scores if name not in names]
        if missing:
            raise FileFormatError(
                f"{source} has no score column(s) {listing(missing)}; its columns are "
                f"{listing(names)}. Pass {OPTIONS['scores']} with existing columns."
            )
        return list(chosen.scores)
    if chosen.prediction is not None:
        return None
    candidates: dict[str, str | list[str]] = {
        name: name for name in names if name.lower() in SCORE_NAMES
    }
    candidates.update(_numbered_score_columns(source, names))
    if len(candidates) > 1:
        raise FileFormatError(
            f"{source} has several sets of scores ({', '.join(candidates)}); pass "
            f"{OPTIONS['scores']} to pick one."
        )
    return next(iter(candidates.values()), None)


def _numbered_score_columns(source: str, names: list[str]) -> dict[str, list[str]]:
    """Groups of columns ``<prefix>_0 … <prefix>_{C-1}``, keyed by a description."""
    groups: dict[str, dict[int, str]] = {}
    for name in names:
        match = _NUMBERED.fullmatch(name)
        if match and match["prefix"].lower() in SCORE_PREFIXES:
            groups.setdefault(match["prefix"], {})[int(match["number"])] = name
    found = {}
    for prefix, members in groups.items():
        numbers = sorted(members)
        if numbers != list(range(len(numbers))):
            missing = sorted(set(range(numbers[-1] + 1)) - set(numbers))
            raise FileFormatError(
                f"{source} has score columns {prefix}_… numbered {first_few(numbers)}, missing "
                f"{first_few([f'{prefix}_{n}' for n in missing])}; expected one column per "
                f"class, numbered from 0 without gaps. Pass {OPTIONS['scores']} explicitly."
            )
        found[f"{prefix}_0…{prefix}_{numbers[-1]}"] = [members[n] for n in numbers]
    return found


def frame_scores(
    frame: pd.DataFrame, names: str | list[str], ids: np.ndarray, source: str
) -> np.ndarray:
    """The [N, C] scores from a list column or from one numeric column per class."""
    if isinstance(names, str):
        return checked_scores(
            _stack_lists(frame[names].to_numpy(), names, ids, source), ids, source
        )
    text = [
        name
        for name in names
        if not pd.api.types.is_numeric_dtype(frame[name]) or pd.api.types.is_bool_dtype(frame[name])
    ]
    if text:
        shown = first_few(frame[text[0]].to_numpy())
        raise FileFormatError(
            f"{source}: score column(s) {listing(text)} are not numeric ({text[0]!r} holds "
            f"{shown}); expected a number per row: logits or probabilities."
        )
    return checked_scores(frame[names].to_numpy(dtype=np.float64), ids, source)


def _stack_lists(cells: np.ndarray, name: str, ids: np.ndarray, source: str) -> np.ndarray:
    """Stack a column of score lists (Python or JSON lists, or arrays) into [N, C] floats."""
    rows = [_as_list(cell) for cell in cells]
    bad = [row for row, value in enumerate(rows) if value is None]
    if bad:
        raise FileFormatError(
            f"{source}: {len(bad)} cell(s) of the score column {name!r} are not lists of "
            f"numbers (ids {first_few(ids[bad])}: {first_few([cells[row] for row in bad])}); "
            "expected a list of scores per row, such as [0.1, 2.3]."
        )
    lengths = np.array([len(value) for value in rows])
    widths, counts = np.unique(lengths, return_counts=True)
    if widths.size > 1:
        odd = np.flatnonzero(lengths != widths[counts.argmax()])
        raise FileFormatError(
            f"{source}: the score lists in {name!r} are ragged (lengths {first_few(widths)}; "
            f"{odd.size} row(s) differ from the usual {widths[counts.argmax()]}, ids "
            f"{first_few(ids[odd])}); expected one score per class in every row."
        )
    try:
        return np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise FileFormatError(
            f"{source}: the score lists in {name!r} hold non-numeric values ({error}); "
            "expected numbers: logits or probabilities."
        ) from error


def _as_list(cell: Any) -> list[Any] | tuple[Any, ...] | np.ndarray | None:
    """A cell's list of scores (parsing JSON text), or None when it holds none."""
    if isinstance(cell, str):
        try:
            cell = json.loads(cell)
        except json.JSONDecodeError:
            return None
    return cell if isinstance(cell, (list, tuple, np.ndarray)) else None


def checked_scores(scores: np.ndarray, ids: np.ndarray, source: str) -> np.ndarray:
    """Raise when a row of scores has NaN or infinity; the message names the ids."""
    bad = np.flatnonzero(~np.isfinite(scores).all(axis=1))
    if bad.size:
        raise FileFormatError(
            f"{source}: {bad.size} row(s) have NaN or infinite scores (ids "
            f"{first_few(ids[bad])}); expected finite logits or probabilities."
        )
    return scores


def array_scores(source: str, name: str, values: np.ndarray) -> np.ndarray:
    if values.ndim != 2:
        raise FileFormatError(
            f"{source}: the scores {name!r} have shape {values.shape}; expected [N, C]: one "
            "row per sample, one score per class."
        )
    if values.dtype.kind not in "iuf":
        raise FileFormatError(
            f"{source}: the scores {name!r} have dtype {values.dtype}; expected numbers: "
            "logits or probabilities."
        )
    return values.astype(np.float64)
