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

import json
import pickle
import re
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from flipless.errors import FileFormatError, InputError
from flipless.validation import first_few, to_numpy

#: The formats :func:`read_predictions` reads, and the suffixes that select them.
SUFFIXES = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".npz": "npz",
    ".result": "result",
    ".pt": "result",
    ".pth": "result",
}
FORMATS = ("csv", "parquet", "jsonl", "npz", "result")

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
_INTEGER_TEXT = re.compile(r"-?(0|[1-9][0-9]{0,17})")
_RESULT_CONTENT = (
    "a dict of tensors {'pred': [N], 'gt': [N], 'outputs': [N, C]} saved with torch.save"
)
_OPTIONS = {
    "id": "id_column= (CLI --id-col)",
    "label": "label_column= (CLI --label-col)",
    "prediction": "prediction_column= (CLI --pred-col)",
    "scores": "score_columns= (CLI --score-cols)",
}


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


@dataclass(frozen=True)
class _Chosen:
    """The field names a caller gave (None: detect)."""

    id: str | None
    label: str | None
    prediction: str | None
    scores: str | Sequence[str] | None


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
        path: the file.
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
    path = Path(path)
    source = str(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise FileFormatError(f"{source} {what}; expected a prediction file. Check the path.")
    kind = detect_format(path, file_format)
    if path.stat().st_size == 0:
        raise FileFormatError(f"{source} is empty (0 bytes); expected {kind} predictions.")
    chosen = _Chosen(id_column, label_column, prediction_column, score_columns)
    if kind in ("npz", "result"):
        arrays, names_in_file = _load_npz(path) if kind == "npz" else _load_result(path)
        table = _from_arrays(source, arrays, chosen, "array" if kind == "npz" else "key")
    else:
        table = _from_frame(source, _load_frame(path, kind, chosen.id), chosen)
        names_in_file = None
    names = _declared_class_names(path, class_names, names_in_file)
    _check_names_fit_scores(source, names, table.scores)
    return PredictionTable(
        source, table.ids, table.labels, table.predicted, table.scores, names, table.extra
    )


def detect_format(path: str | PathLike[str], file_format: str | None = None) -> str:
    """The format of ``path``: ``file_format`` when given, else the one its suffix names."""
    if file_format is not None:
        if file_format not in FORMATS:
            raise InputError(f"file_format={file_format!r}; expected one of {', '.join(FORMATS)}.")
        return file_format
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise FileFormatError(
            f"{path} has the unknown suffix {suffix or '(none)'!r}; expected one of "
            f"{', '.join(SUFFIXES)}. Rename the file or pass file_format= "
            f"(one of {', '.join(FORMATS)})."
        )
    return SUFFIXES[suffix]


# Loading ---------------------------------------------------------------------------------------
def _load_frame(path: Path, kind: str, id_column: str | None) -> pd.DataFrame:
    """Read a csv, parquet or jsonl file into a DataFrame; wrap the readers' errors."""
    try:
        if kind == "csv":
            return _load_csv(path, id_column)
        if kind == "parquet":
            return pd.read_parquet(path, engine="pyarrow")
        return _load_jsonl(path)
    except (OSError, ValueError, pa.ArrowException) as error:
        raise FileFormatError(
            f"{path} could not be read as {kind} ({_first_line(error)}); the file may be "
            f"truncated or not a {kind} file. Expected one row per sample."
        ) from error


def _load_csv(path: Path, id_column: str | None) -> pd.DataFrame:
    """Read a CSV file, its id column as text (so "007" and "1e5" stay as written)."""
    header = [str(name) for name in pd.read_csv(path, nrows=0).columns]
    id_name = _find(str(path), header, ID_NAMES, id_column, "id", "column")
    return pd.read_csv(path, dtype={id_name: str} if id_name is not None else None)


def _load_jsonl(path: Path) -> pd.DataFrame:
    """Read JSON lines: one object per non-blank line."""
    records = []
    with path.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise FileFormatError(
                    f"{path}: line {number} is not valid JSON ({error.msg} at column "
                    f"{error.colno}); expected one JSON object per line. The file may be "
                    "truncated."
                ) from error
            if not isinstance(record, dict):
                raise FileFormatError(
                    f"{path}: line {number} holds a JSON {type(record).__name__}; expected one "
                    'JSON object per line, such as {"id": 1, "label": 0, "pred": 2}.'
                )
            records.append(record)
    return pd.DataFrame.from_records(records)


def _load_npz(path: Path) -> tuple[dict[str, np.ndarray], Any]:
    """The arrays of an npz archive (no pickles), and its ``class_names`` entry if any."""
    try:
        with path.open("rb") as stream:  # numpy leaves its own handle open when a zip is bad
            archive = np.load(stream, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise FileFormatError(
                    f"{path} holds a single array of shape {archive.shape}; expected an npz "
                    "archive of named arrays (np.savez(path, ids=..., labels=..., logits=...))."
                )
            with archive:
                arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise FileFormatError(
            f"{path} could not be read as an npz archive ({_first_line(error)}); the file may "
            "be truncated or of another format. Expected numpy arrays saved with np.savez, "
            "without Python objects (save names as np.array(names, dtype=str))."
        ) from error
    return arrays, arrays.pop("class_names", None)


def _load_result(path: Path) -> tuple[dict[str, np.ndarray], Any]:
    """The tensors of a torch-saved prediction dict, loaded with ``weights_only=True`` only."""
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch warns before refusing a pickle
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise FileFormatError(
            f"{path} is not a prediction dict that can be loaded safely: "
            f"torch.load(weights_only=True) refused it ({_unpickler_reason(error)}), so it "
            "holds objects other than tensors and plain containers, or is not a torch file. "
            f"flipless never unpickles other objects; expected {_RESULT_CONTENT} (plain "
            "tensors, no model objects or custom classes), or export the predictions to npz."
        ) from error
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise FileFormatError(
            f"{path} could not be read as a torch file ({_first_line(error)}); the file may be "
            f"truncated or of another format. Expected {_RESULT_CONTENT}."
        ) from error
    if not isinstance(loaded, Mapping):
        raise FileFormatError(
            f"{path} holds a {type(loaded).__name__}; expected {_RESULT_CONTENT}."
        )
    arrays = {
        str(key): to_numpy(value, f"{path}[{key!r}]")
        for key, value in loaded.items()
        if isinstance(value, torch.Tensor)
    }
    return arrays, loaded.get("class_names")


def _first_line(error: BaseException) -> str:
    """The first sentence of an error's message (the rest is often advice that misleads here)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0].split(". ")[0]


def _unpickler_reason(error: BaseException) -> str:
    """The useful part of torch's long weights-only refusal (which class or opcode it met)."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker not in text:
        return _first_line(error)
    reason = " ".join(text.split(marker, 1)[1].split("Check the documentation")[0].split())
    return reason.split(". ")[0] or _first_line(error)


# Fields ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Fields:
    """What a file gave, before class names are attached."""

    ids: np.ndarray
    labels: np.ndarray | None
    predicted: np.ndarray | None
    scores: np.ndarray | None
    extra: pd.DataFrame


def _find(
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
                f"{_listing(names)}. Pass {_OPTIONS[role]} with one of them."
            )
        return given
    found = [name for name in names if name.lower() in candidates]
    if len(found) > 1:
        raise FileFormatError(
            f"{source} has several {field}s that could hold the {role} ({', '.join(found)}); "
            f"pass {_OPTIONS[role]} to pick one."
        )
    return found[0] if found else None


def _listing(names: Sequence[str]) -> str:
    return ", ".join(repr(name) for name in names) if names else "(none)"


def _from_frame(source: str, frame: pd.DataFrame, chosen: _Chosen) -> _Fields:
    """Pick the fields out of a csv, parquet or jsonl table."""
    if frame.shape[0] == 0:
        raise FileFormatError(f"{source} has no rows; expected one row per sample.")
    frame = frame.set_axis([str(name) for name in frame.columns], axis=1)
    names = list(frame.columns)
    id_name = _find(source, names, ID_NAMES, chosen.id, "id", "column")
    if id_name is None:
        raise FileFormatError(
            f"{source} has no id column; its columns are {_listing(names)}. Rows are joined "
            f"by sample id: pass {_OPTIONS['id']} naming the column of ids."
        )
    ids = _ids(frame[id_name].to_numpy(), source)
    label_name = _find(source, names, LABEL_NAMES, chosen.label, "label", "column")
    prediction_name = _find(
        source, names, PREDICTION_NAMES, chosen.prediction, "prediction", "column"
    )
    score_names = _score_columns(source, names, chosen)
    if prediction_name is None and score_names is None:
        raise FileFormatError(
            f"{source} has neither predicted labels nor scores; its columns are "
            f"{_listing(names)}. Pass {_OPTIONS['prediction']} or {_OPTIONS['scores']}."
        )
    used = [id_name, label_name, prediction_name]
    used += [score_names] if isinstance(score_names, str) else score_names or []
    return _Fields(
        ids=ids,
        labels=_column_classes(frame, label_name, "labels", ids, source),
        predicted=_column_classes(frame, prediction_name, "predictions", ids, source),
        scores=None if score_names is None else _frame_scores(frame, score_names, ids, source),
        extra=frame.drop(columns=[name for name in names if name in used]).reset_index(drop=True),
    )


def _column_classes(
    frame: pd.DataFrame, name: str | None, role: str, ids: np.ndarray, source: str
) -> np.ndarray | None:
    return None if name is None else _classes(frame[name].to_numpy(), role, ids, source)


def _score_columns(source: str, names: list[str], chosen: _Chosen) -> str | list[str] | None:
    """One list column of scores, or numeric columns one per class; None when there are none."""
    if isinstance(chosen.scores, str):
        _find(source, names, SCORE_NAMES, chosen.scores, "scores", "column")
        return chosen.scores
    if chosen.scores is not None:
        missing = [name for name in chosen.scores if name not in names]
        if missing:
            raise FileFormatError(
                f"{source} has no score column(s) {_listing(missing)}; its columns are "
                f"{_listing(names)}. Pass {_OPTIONS['scores']} with existing columns."
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
            f"{_OPTIONS['scores']} to pick one."
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
                f"class, numbered from 0 without gaps. Pass {_OPTIONS['scores']} explicitly."
            )
        found[f"{prefix}_0…{prefix}_{numbers[-1]}"] = [members[n] for n in numbers]
    return found


def _frame_scores(
    frame: pd.DataFrame, names: str | list[str], ids: np.ndarray, source: str
) -> np.ndarray:
    """The [N, C] scores from a list column or from one numeric column per class."""
    if isinstance(names, str):
        return _checked_scores(
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
            f"{source}: score column(s) {_listing(text)} are not numeric ({text[0]!r} holds "
            f"{shown}); expected a number per row: logits or probabilities."
        )
    return _checked_scores(frame[names].to_numpy(dtype=np.float64), ids, source)


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


def _checked_scores(scores: np.ndarray, ids: np.ndarray, source: str) -> np.ndarray:
    """Raise when a row of scores has NaN or infinity; the message names the ids."""
    bad = np.flatnonzero(~np.isfinite(scores).all(axis=1))
    if bad.size:
        raise FileFormatError(
            f"{source}: {bad.size} row(s) have NaN or infinite scores (ids "
            f"{first_few(ids[bad])}); expected finite logits or probabilities."
        )
    return scores


def _from_arrays(
    source: str, arrays: dict[str, np.ndarray], chosen: _Chosen, field: str
) -> _Fields:
    """Pick the fields out of named arrays (npz or result); rows are positional without ids."""
    names = list(arrays)
    if isinstance(chosen.scores, (list, tuple)):
        raise InputError(
            f"score_columns={list(chosen.scores)!r} for {source}; an {field} file holds its "
            f"scores in one [N, C] {field}: pass its name."
        )
    found = {
        "id": _find(source, names, ID_NAMES, chosen.id, "id", field),
        "label": _find(source, names, LABEL_NAMES, chosen.label, "label", field),
        "prediction": _find(
            source, names, PREDICTION_NAMES, chosen.prediction, "prediction", field
        ),
        "scores": None
        if chosen.prediction is not None and chosen.scores is None
        else _find(source, names, SCORE_NAMES, chosen.scores, "scores", field),
    }
    if found["prediction"] is None and found["scores"] is None:
        raise FileFormatError(
            f"{source} has neither predicted labels nor scores; its {field}s are "
            f"{_listing(names)}. Expected 'pred' [N] and/or 'outputs' (logits) [N, C], or pass "
            f"{_OPTIONS['prediction']} or {_OPTIONS['scores']}."
        )
    size = _common_length(source, {name: arrays[name] for name in found.values() if name})
    ids = (
        np.arange(size, dtype=np.int64)
        if found["id"] is None
        else _ids(arrays[found["id"]], source)
    )
    scores = None
    if found["scores"] is not None:
        scores = _checked_scores(
            _array_scores(source, found["scores"], arrays[found["scores"]]), ids, source
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


def _array_scores(source: str, name: str, values: np.ndarray) -> np.ndarray:
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
    missing = np.flatnonzero(pd.isna(values))
    if missing.size:
        raise FileFormatError(
            f"{source}: {missing.size} row(s) have no id (NaN or empty; rows counted from 0: "
            f"{first_few(missing)}); expected an id in every row."
        )
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
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
    missing = np.flatnonzero(pd.isna(values))
    if missing.size:
        raise FileFormatError(
            f"{source}: {missing.size} row(s) have no {role} (ids {first_few(ids[missing])}); "
            f"expected {role} in every row. Drop those rows first."
        )
    kind = values.dtype.kind
    if kind in "biu":
        return values.astype(np.int64)
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
    path: Path, given: Sequence[str] | None, in_file: Any
) -> tuple[str, ...] | None:
    """Class names from the argument, the file, ``<file>.classes.json`` or ``info.json``."""
    if given is not None:
        return _unique_names(given, "class_names")
    if in_file is not None:
        return _unique_names(np.asarray(in_file).tolist(), f"{path}'s class_names")
    sidecar = path.with_name(path.name + ".classes.json")
    if sidecar.is_file():
        document = _read_json(sidecar)
        names = document.get("labels") if isinstance(document, dict) else document
        if not isinstance(names, list):
            raise FileFormatError(
                f"{sidecar} holds no list of class names; expected a JSON list such as "
                '["cat", "dog"], or an object with a "labels" list.'
            )
        return _unique_names(names, str(sidecar))
    info = path.with_name("info.json")
    if info.is_file():
        document = _read_json(info, strict=False)
        if isinstance(document, dict) and isinstance(document.get("labels"), list):
            return _unique_names(document["labels"], f"{info} (its 'labels')")
    return None


def _read_json(path: Path, strict: bool = True) -> Any:
    """A JSON document; an unreadable one raises, or gives None when not ``strict``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        if not strict:
            return None
        raise FileFormatError(
            f"{path} could not be read as JSON ({_first_line(error)}); expected a list of class "
            "names."
        ) from error


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
