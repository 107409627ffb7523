"""Read one model's predictions from a file into a :class:`PredictionTable`.

Formats, picked by the file's suffix unless ``file_format`` names one:

=========  ======================  ========================================================
format     suffixes                content
=========  ======================  ========================================================
csv        .csv                    a header row, then one row per sample
parquet    .parquet, .pq           one row per sample (read with pyarrow)
jsonl      .jsonl, .ndjson         one JSON object per line, one line per sample
npz        .npz                    named numpy arrays of equal length (``np.savez``); no
                                   Python objects (loaded with ``allow_pickle=False``)
result     .result, .pt, .pth      a ``torch.save``-d dict of tensors ``{"pred": [N],
                                   "gt": [N], "outputs": [N, C]}``, as written by the
                                   regression-constraint-model-upgrade training scripts;
                                   loaded with ``torch.load(weights_only=True)`` only
=========  ======================  ========================================================

Each field is found by name (case-insensitive) unless named explicitly:

* id: ``id``, ``ids``, ``sample_id``, ``sample_ids``, ``idx``, ``index``, ``uid``. Tabular
  files need one; npz and result files without one are positional (ids ``0 … N-1``).
* true labels (optional): ``label``, ``labels``, ``gt``, ``y``, ``target``, ``true``,
  ``true_label``.
* predicted labels: ``pred``, ``preds``, ``prediction``, ``predictions``, ``predicted``,
  ``predicted_label``, ``y_pred``.
* scores (logits or probabilities): a column or array named ``logits``, ``outputs``,
  ``scores``, ``probs`` or ``probabilities`` holding one list per row (a JSON list such as
  ``"[0.1, 2.3]"`` in CSV), or columns ``logit_0, logit_1, …`` (also ``logits_``, ``score_``,
  ``scores_``, ``prob_``, ``probs_``, ``output_``) ordered by their number.

A file needs predicted labels or scores; when it has both, both are kept (the join uses the
scores). Naming ``prediction_column`` alone turns score detection off. Every other column (or
other 1-D array of length N) is kept in :attr:`PredictionTable.extra`, to slice results by.

Ids that are all integers (numbers, or text such as ``"42"`` without leading zeros) are read
as int64 in every format, so a CSV and a JSON-lines file of the same samples join; other ids
stay text. Labels and predictions are int64 class indices or text class names.

Class names are declared by, in this order: the ``class_names`` argument, a ``class_names``
array (npz) or list (result) in the file, a sidecar ``<file>.classes.json`` (a JSON list of
names, or an object with a ``labels`` list), or an ``info.json`` next to the file that has a
``labels`` list (as in the MASSIVE data); an ``info.json`` without one is ignored.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flipless import remote
from flipless.errors import FileFormatError, InputError, MissingFileError
from flipless.io.columns import (
    ID_NAMES,
    LABEL_NAMES,
    OPTIONS,
    PREDICTION_NAMES,
    SCORE_NAMES,
    ArrowColumns,
    Chosen,
    FrameColumns,
    array_scores,
    checked_scores,
    find,
    frame_scores,
    listing,
    score_columns,
)
from flipless.io.formats import FORMATS, detect_format, load_frame, load_npz, load_result, read_json
from flipless.validation import first_few

__all__ = ["FORMATS", "PredictionTable", "detect_format", "read_predictions"]

_INTEGER_TEXT = re.compile(r"-?(0|[1-9][0-9]{0,17})")


@dataclass(frozen=True, eq=False)
class PredictionTable:
    """One model's predictions as read from a file, one row per sample, in file order.

    Attributes:
        source: the file's path, for messages.
        ids: [N] sample ids (int64, or text in an object array).
        labels: [N] true labels (int64 indices or text class names), None if the file has none.
        predicted: [N] predicted labels (int64 indices or text names), None if not given.
        scores: [N, C] float64 logits or probabilities, None if not given.
        class_names: the declared class names, None if none were declared.
        extra: every other column, in the same row order (slice columns).
    """

    source: str
    ids: np.ndarray
    labels: np.ndarray | None
    predicted: np.ndarray | None
    scores: np.ndarray | None
    class_names: tuple[str, ...] | None
    extra: pd.DataFrame

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def read_predictions(
    path: str | PathLike[str],
    *,
    id_column: str | None = None,
    label_column: str | None = None,
    prediction_column: str | None = None,
    score_columns: str | Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    file_format: str | None = None,
) -> PredictionTable:
    """Read a prediction file (csv, parquet, jsonl, npz or result; see the module docstring).

    Args:
        path: the file: a local path or a URL such as ``s3://bucket/old.parquet``
            (:mod:`flipless.remote`).
        id_column, label_column, prediction_column: the column (npz: array; result: key)
            holding the sample ids, true labels or predicted labels; default: detected by name.
        score_columns: several columns of scores (one per class, in class order), or the name
            of one column holding a list of scores per row; default: detected by name.
        class_names: the names of the classes, in index order.
        file_format: one of ``FORMATS``; default: from the suffix.

    Raises:
        FileFormatError: the file is missing, empty, truncated, of an unknown type, or lacks
            the fields above.
    """
    path = remote.as_path(path)
    source = str(path)
    if remote.is_dir(path):
        raise FileFormatError(f"{source} is a folder; expected a prediction file. Check the path.")
    if not remote.is_file(path):
        raise MissingFileError(
            f"{source} does not exist; expected a prediction file. Check the path."
        )
    kind = detect_format(path, file_format)
    if remote.size(path) == 0:
        raise FileFormatError(f"{source} is empty (0 bytes); expected {kind} predictions.")
    chosen = Chosen(id_column, label_column, prediction_column, score_columns)
    if kind in ("npz", "result"):
        arrays, names_in_file = load_npz(path) if kind == "npz" else load_result(path)
        table = _from_arrays(source, arrays, chosen, "array" if kind == "npz" else "key")
    else:
        loaded = load_frame(path, kind, chosen.id)
        columns = FrameColumns(loaded) if isinstance(loaded, pd.DataFrame) else ArrowColumns(loaded)
        table = _from_columns(source, columns, chosen)
        names_in_file = None
    names = _declared_class_names(path, class_names, names_in_file)
    _check_names_fit_scores(source, names, table.scores)
    return PredictionTable(
        source, table.ids, table.labels, table.predicted, table.scores, names, table.extra
    )


@dataclass(frozen=True)
class _Fields:
    """What a file gave, before class names are attached."""

    ids: np.ndarray
    labels: np.ndarray | None
    predicted: np.ndarray | None
    scores: np.ndarray | None
    extra: pd.DataFrame


def _from_columns(source: str, columns: FrameColumns | ArrowColumns, chosen: Chosen) -> _Fields:
    """Pick the fields out of a csv, parquet or jsonl table."""
    if columns.rows == 0:
        raise FileFormatError(f"{source} has no rows; expected one row per sample.")
    names = columns.names
    id_name = find(source, names, ID_NAMES, chosen.id, "id", "column")
    if id_name is None:
        raise FileFormatError(
            f"{source} has no id column; its columns are {listing(names)}. Rows are joined "
            f"by sample id: pass {OPTIONS['id']} naming the column of ids."
        )
    ids = _ids(columns.values(id_name), source)
    label_name = find(source, names, LABEL_NAMES, chosen.label, "label", "column")
    prediction_name = find(
        source, names, PREDICTION_NAMES, chosen.prediction, "prediction", "column"
    )
    score_names = score_columns(source, names, chosen)
    if prediction_name is None and score_names is None:
        raise FileFormatError(
            f"{source} has neither predicted labels nor scores; its columns are "
            f"{listing(names)}. Pass {OPTIONS['prediction']} or {OPTIONS['scores']}."
        )
    used = [id_name, label_name, prediction_name]
    used += [score_names] if isinstance(score_names, str) else score_names or []
    scores = None
    if score_names is not None:
        listed = [score_names] if isinstance(score_names, str) else score_names
        scores = frame_scores(columns.frame(listed), score_names, ids, source)
    return _Fields(
        ids=ids,
        labels=_column_classes(columns, label_name, "labels", ids, source),
        predicted=_column_classes(columns, prediction_name, "predictions", ids, source),
        scores=scores,
        extra=columns.frame([name for name in names if name not in used]),
    )


def _column_classes(
    columns: FrameColumns | ArrowColumns, name: str | None, role: str, ids: np.ndarray, source: str
) -> np.ndarray | None:
    return None if name is None else _classes(columns.values(name), role, ids, source)


def _from_arrays(source: str, arrays: dict[str, np.ndarray], chosen: Chosen, field: str) -> _Fields:
    """Pick the fields out of named arrays (npz or result); rows are positional without ids."""
    names = list(arrays)
    if isinstance(chosen.scores, (list, tuple)):
        raise InputError(
            f"score_columns={list(chosen.scores)!r} for {source}; an {field} file holds its "
            f"scores in one [N, C] {field}: pass its name."
        )
    found = {
        "id": find(source, names, ID_NAMES, chosen.id, "id", field),
        "label": find(source, names, LABEL_NAMES, chosen.label, "label", field),
        "prediction": find(source, names, PREDICTION_NAMES, chosen.prediction, "prediction", field),
        "scores": None
        if chosen.prediction is not None and chosen.scores is None
        else find(source, names, SCORE_NAMES, chosen.scores, "scores", field),
    }
    if found["prediction"] is None and found["scores"] is None:
        raise FileFormatError(
            f"{source} has neither predicted labels nor scores; its {field}s are "
            f"{listing(names)}. Expected 'pred' [N] and/or 'outputs' (logits) [N, C], or pass "
            f"{OPTIONS['prediction']} or {OPTIONS['scores']}."
        )
    size = _common_length(source, {name: arrays[name] for name in found.values() if name})
    ids = (
        np.arange(size, dtype=np.int64)
        if found["id"] is None
        else _ids(arrays[found["id"]], source)
    )
    scores = None
    if found["scores"] is not None:
        scores = checked_scores(
            array_scores(source, found["scores"], arrays[found["scores"]]), ids, source
        )
    used = set(found.values())
    extra = {
        name: values
        for name, values in arrays.items()
        if name not in used and values.ndim == 1 and values.shape[0] == size
    }
    return _Fields(
        ids=ids,
        labels=_array_classes(arrays, found["label"], "labels", ids, source),
        predicted=_array_classes(arrays, found["prediction"], "predictions", ids, source),
        scores=scores,
        extra=pd.DataFrame(extra, index=pd.RangeIndex(size)),
    )


def _common_length(source: str, arrays: dict[str, np.ndarray]) -> int:
    """The number of rows shared by ``arrays`` (at least one)."""
    lengths = {name: (values.shape[0] if values.ndim else 0) for name, values in arrays.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name!r} has {length}" for name, length in lengths.items())
        raise FileFormatError(
            f"{source}: the arrays have different lengths ({listed}); expected one row per "
            "sample in each."
        )
    size = next(iter(lengths.values()))
    if size == 0:
        raise FileFormatError(f"{source} has no rows; expected one row per sample.")
    return size


def _array_classes(
    arrays: dict[str, np.ndarray], name: str | None, role: str, ids: np.ndarray, source: str
) -> np.ndarray | None:
    if name is None:
        return None
    if arrays[name].ndim != 1:
        raise FileFormatError(
            f"{source}: the {role} {name!r} have shape {arrays[name].shape}; expected one class "
            "per sample, shape [N]."
        )
    return _classes(arrays[name], role, ids, source)


# Values ----------------------------------------------------------------------------------------
def _ids(values: np.ndarray, source: str) -> np.ndarray:
    """Ids as int64 when all are integers, else as text; missing or other values are errors."""
    if values.ndim != 1:
        raise FileFormatError(f"{source}: the ids have shape {values.shape}; expected [N].")
    if values.dtype.kind in "iu":
        return values.astype(np.int64, copy=False)
    missing = np.flatnonzero(pd.isna(values))
    if missing.size:
        raise FileFormatError(
            f"{source}: {missing.size} row(s) have no id (NaN or empty; rows counted from 0: "
            f"{first_few(missing)}); expected an id in every row."
        )
    if values.dtype.kind == "f":
        fractional = np.flatnonzero(values != np.round(values))
        if fractional.size:
            raise FileFormatError(
                f"{source}: {fractional.size} id(s) are fractions "
                f"({first_few(values[fractional])}); expected integer or text ids."
            )
        return values.astype(np.int64)
    items = values.tolist()
    odd = [item for item in items if isinstance(item, bool) or not isinstance(item, (str, int))]
    if odd:
        raise FileFormatError(
            f"{source}: {len(odd)} id(s) are neither integers nor text ({first_few(odd)}); "
            "expected integer or text ids."
        )
    text = [str(item) for item in items]
    if all(_INTEGER_TEXT.fullmatch(item) for item in text):
        return np.array([int(item) for item in text], dtype=np.int64)
    return np.array(text, dtype=object)


def _classes(values: np.ndarray, role: str, ids: np.ndarray, source: str) -> np.ndarray:
    """Labels or predictions as int64 class indices or an object array of class names."""
    if values.dtype.kind in "biu":
        return values.astype(np.int64, copy=False)
    missing = np.flatnonzero(pd.isna(values))
    if missing.size:
        raise FileFormatError(
            f"{source}: {missing.size} row(s) have no {role} (ids {first_few(ids[missing])}); "
            f"expected {role} in every row. Drop those rows first."
        )
    kind = values.dtype.kind
    if kind == "f":
        fractional = np.flatnonzero(values != np.round(values))
        if fractional.size:
            raise FileFormatError(
                f"{source}: {fractional.size} {role} are fractions (ids "
                f"{first_few(ids[fractional])}: {first_few(values[fractional])}); expected class "
                "indices or class names."
            )
        return values.astype(np.int64)
    items = values.tolist()
    if all(isinstance(item, str) for item in items):
        return np.array(items, dtype=object)
    if all(isinstance(item, int) and not isinstance(item, bool) for item in items):
        return np.array(items, dtype=np.int64)
    raise FileFormatError(
        f"{source}: the {role} mix types ({first_few(sorted({type(i).__name__ for i in items}))});"
        " expected all class indices or all class names."
    )


# Class names -----------------------------------------------------------------------------------
def _declared_class_names(
    path: str | Path, given: Sequence[str] | None, in_file: Any
) -> tuple[str, ...] | None:
    """Class names from the argument, the file, ``<file>.classes.json`` or ``info.json``."""
    if given is not None:
        return _unique_names(given, "class_names")
    if in_file is not None:
        return _unique_names(np.asarray(in_file).tolist(), f"{path}'s class_names")
    sidecar = remote.sibling(path, remote.name_of(path) + ".classes.json")
    if remote.is_file(sidecar):
        document = read_json(sidecar)
        names = document.get("labels") if isinstance(document, dict) else document
        if not isinstance(names, list):
            raise FileFormatError(
                f"{sidecar} holds no list of class names; expected a JSON list such as "
                '["cat", "dog"], or an object with a "labels" list.'
            )
        return _unique_names(names, str(sidecar))
    info = remote.sibling(path, "info.json")
    if remote.is_file(info):
        document = read_json(info, strict=False)
        if isinstance(document, dict) and isinstance(document.get("labels"), list):
            return _unique_names(document["labels"], f"{info} (its 'labels')")
    return None


def _unique_names(names: Sequence[Any], origin: str) -> tuple[str, ...]:
    names = tuple(str(name) for name in names)
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated or not names:
        what = f"repeats {first_few(repeated)}" if repeated else "is empty"
        raise FileFormatError(f"The class-name list of {origin} {what}; expected unique names.")
    return names


def _check_names_fit_scores(
    source: str, names: tuple[str, ...] | None, scores: np.ndarray | None
) -> None:
    if names is not None and scores is not None and len(names) != scores.shape[1]:
        raise FileFormatError(
            f"{source} has {scores.shape[1]} scores per row but {len(names)} declared class "
            f"names ({first_few(names)}); expected one name per score column. Check the "
            "class_names argument and the .classes.json / info.json files next to it."
        )
