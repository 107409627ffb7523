"""Write one model's predictions to a file that :func:`~flipless.io.read_predictions` reads back.

The format follows the suffix (``.csv``, ``.parquet``/``.pq``, ``.jsonl``/``.ndjson``,
``.npz``). Every format holds the same fields, under names the readers detect:

=============  ==========================================================================
field          written as
=============  ==========================================================================
``id``         the sample ids (int64, or text)
``label``      the true class indices, when known
``prediction`` the predicted class indices
scores         optional: ``logits`` or ``probabilities``, one list per row in parquet and
               jsonl, an [N, C] array in npz, and columns ``logit_0 … logit_{C-1}`` (or
               ``prob_0 …``) in csv
class names    in npz the array ``class_names``; otherwise the sidecar
               ``<file>.classes.json`` (a JSON list, index order), which the readers read
=============  ==========================================================================

Classes are written as indices and named once, by the class-name list, so a name that looks
like a number ("10") can never be misread, and ``compare`` checks that both files name the
same classes in the same order. Scores are written in float64 (a float32 logit converts
exactly), so a file read back gives the very numbers written.

Nothing is overwritten unless asked (``overwrite=True``), and each file is written atomically
(:func:`flipless.remote.atomic_local_file`: a temporary file renamed into place, or uploaded
whole to a URL such as ``s3://…``), so a crash leaves either the old file or the whole new one,
never half of one. The sidecar is published before the predictions, so a prediction file never
stands next to a sidecar of other predictions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from flipless import remote
from flipless.errors import InputError, MismatchError
from flipless.io.formats import SUFFIXES
from flipless.validation import first_few

#: The formats :func:`write_predictions` writes (``result`` files are read, never written).
WRITE_FORMATS = ("csv", "parquet", "jsonl", "npz")
#: What scores may be: the name of the list column / array, and the csv column prefix.
SCORE_KINDS = {"logits": "logit", "probabilities": "prob"}


def write_predictions(
    path: str | PathLike[str],
    ids: Any,
    predicted: Any,
    *,
    labels: Any = None,
    scores: Any = None,
    scores_kind: str = "logits",
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write predictions to ``path`` (format by suffix; see the module docstring).

    Args:
        path: the file to write; its folder is created when missing.
        ids: [N] unique sample ids (integers or text).
        predicted: [N] predicted class indices.
        labels: [N] true class indices, or None when unknown.
        scores: [N, C] logits or probabilities, or None.
        scores_kind: ``"logits"`` or ``"probabilities"``: what ``scores`` are.
        class_names: the C class names in index order, or None.
        overwrite: replace an existing file (and its sidecar) instead of failing.

    Returns:
        The path written.

    Raises:
        InputError: an existing file without ``overwrite``, an unknown suffix, repeated ids,
            class indices outside the classes, or non-finite scores.
        MismatchError: fields of different lengths, or scores and class names of different
            widths.
    """
    path = remote.as_path(path)
    kind = _write_format(path)
    if scores_kind not in SCORE_KINDS:
        raise InputError(
            f"scores_kind={scores_kind!r}; expected one of {', '.join(map(repr, SCORE_KINDS))}."
        )
    fields = _checked_fields(ids, predicted, labels, scores, class_names)
    sidecar = _sidecar(path)
    check_output(path, overwrite)
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
    names = None if class_names is None else [str(name) for name in class_names]
    if kind != "npz":
        if names is not None:
            remote.write_text(sidecar, json.dumps(names, ensure_ascii=False) + "\n")
        elif remote.exists(sidecar):  # a stale sidecar would name other classes
            _remove(sidecar)
    with remote.atomic_local_file(path) as temporary:
        if kind == "npz":
            _write_npz(temporary, fields, scores_kind, names)
        else:
            WRITERS[kind](temporary, fields, scores_kind)
    return path


def _write_format(path: str | Path) -> str:
    suffix = remote.suffix_of(path)
    kind = SUFFIXES.get(suffix.lower())
    if kind not in WRITE_FORMATS:
        suffixes = [suffix for suffix, name in SUFFIXES.items() if name in WRITE_FORMATS]
        raise InputError(
            f"{path} has the suffix {suffix or '(none)'!r}; predictions are written as "
            f"{', '.join(suffixes)}. Name the output file with one of them."
        )
    return kind


def check_output(path: str | PathLike[str], overwrite: bool = False) -> None:
    """Raise unless predictions may be written to ``path``: a suffix of a format written, not
    a folder, and (unless ``overwrite``) neither the file nor its sidecar already there. Call
    it before long work, so that a run does not end in this error."""
    path = remote.as_path(path)
    _write_format(path)
    if remote.is_dir(path):
        raise InputError(f"{path} is a folder; expected the path of a prediction file to write.")
    if overwrite:
        return
    existing = [str(p) for p in (path, _sidecar(path)) if remote.exists(p)]
    if existing:
        raise InputError(
            f"{' and '.join(existing)} already {'exists' if len(existing) == 1 else 'exist'}; "
            "flipless does not overwrite predictions silently. Pass --overwrite "
            "(overwrite=True in Python) to replace them, or choose another output path."
        )


def _sidecar(path: str | Path) -> str | Path:
    """``<file>.classes.json``: the class names of a csv, parquet or jsonl prediction file."""
    return remote.sibling(path, remote.name_of(path) + ".classes.json")


def _remove(path: str | Path) -> None:
    if isinstance(path, Path):
        path.unlink(missing_ok=True)
    else:
        fs, inner = remote.filesystem(path)
        fs.rm(inner)


def _checked_fields(
    ids: Any, predicted: Any, labels: Any, scores: Any, class_names: Sequence[str] | None
) -> dict[str, np.ndarray]:
    """The fields as arrays: ids, prediction, and label / scores when given; all checked."""
    fields = {"id": _ids(ids), "prediction": _classes(predicted, "predicted")}
    if labels is not None:
        fields["label"] = _classes(labels, "labels")
    if scores is not None:
        fields["scores"] = _scores(scores)
    lengths = {name: values.shape[0] for name, values in fields.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} {length}" for name, length in lengths.items())
        raise MismatchError(
            f"the predictions have fields of different lengths ({listed}); expected one value "
            "(one row of scores) per sample."
        )
    if scores is not None:
        bad = np.flatnonzero(~np.isfinite(fields["scores"]).all(axis=1))
        if bad.size:
            raise InputError(
                f"{bad.size} row(s) of scores are NaN or infinite (ids "
                f"{first_few(fields['id'][bad])}); expected finite logits or probabilities."
            )
    width = None if scores is None else fields["scores"].shape[1]
    if class_names is not None:
        if width is not None and width != len(class_names):
            raise MismatchError(
                f"{width} scores per sample but {len(class_names)} class names "
                f"({first_few(list(class_names))}); expected one name per score column."
            )
        width = len(class_names)
    for name in ("prediction", "label"):
        values = fields.get(name)
        if width is None or values is None:
            continue
        outside = (values < 0) | (values >= width)
        if outside.any():
            raise InputError(
                f"{name} values {first_few(pd.unique(values[outside]))} (ids "
                f"{first_few(fields['id'][outside])}) are not class indices in [0, {width})."
            )
    return fields


def _ids(values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise InputError(f"ids have shape {array.shape}; expected [N], one id per sample.")
    if array.dtype.kind in "iu":
        array = array.astype(np.int64)
    elif array.dtype.kind in "UO" and all(isinstance(item, str) for item in array.tolist()):
        array = array.astype(object)
    else:
        raise InputError(f"ids have dtype {array.dtype}; expected integers or text.")
    repeated = pd.unique(array[pd.Series(array).duplicated().to_numpy()])
    if repeated.size:
        raise InputError(
            f"{repeated.size} id(s) appear more than once ({first_few(repeated)}); expected one "
            "row per sample."
        )
    return array


def _classes(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise InputError(
            f"{what} classes are {array.dtype} of shape {array.shape}; expected int class "
            "indices [N] (class names go in class_names)."
        )
    return array.astype(np.int64)


def _scores(values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 2 or array.dtype.kind not in "iuf":
        raise InputError(
            f"scores are {array.dtype} of shape {array.shape}; expected numbers [N, C], one row "
            "per sample and one score per class."
        )
    return array.astype(np.float64)


# Writing ---------------------------------------------------------------------------------------
def _columns(fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """id, label (when known) and prediction, in that order."""
    order = ("id", "label", "prediction")
    return {name: fields[name] for name in order if name in fields}


def _write_csv(target: Path, fields: dict[str, np.ndarray], scores_kind: str) -> None:
    frame = pd.DataFrame(_columns(fields))
    if "scores" in fields:
        prefix = SCORE_KINDS[scores_kind]
        scores = pd.DataFrame(
            fields["scores"], columns=[f"{prefix}_{k}" for k in range(fields["scores"].shape[1])]
        )
        frame = pd.concat([frame, scores], axis=1)
    frame.to_csv(target, index=False)  # floats as repr: they read back to the same float64


def _write_parquet(target: Path, fields: dict[str, np.ndarray], scores_kind: str) -> None:
    columns: dict[str, pa.Array] = {
        name: pa.array(values.tolist() if values.dtype == object else values)
        for name, values in _columns(fields).items()
    }
    if "scores" in fields:
        scores = fields["scores"]
        columns[scores_kind] = pa.FixedSizeListArray.from_arrays(
            pa.array(scores.ravel()), scores.shape[1]
        )
    pq.write_table(pa.table(columns), target)


def _write_jsonl(target: Path, fields: dict[str, np.ndarray], scores_kind: str) -> None:
    columns = {name: values.tolist() for name, values in _columns(fields).items()}
    scores = fields["scores"].tolist() if "scores" in fields else None
    with target.open("w", encoding="utf-8") as stream:
        for row in range(len(fields["id"])):
            record = {name: values[row] for name, values in columns.items()}
            if scores is not None:
                record[scores_kind] = scores[row]
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")


WRITERS: dict[str, Callable[[Path, dict[str, np.ndarray], str], None]] = {
    "csv": _write_csv,
    "parquet": _write_parquet,
    "jsonl": _write_jsonl,
}


def _write_npz(
    target: Path, fields: dict[str, np.ndarray], scores_kind: str, names: list[str] | None
) -> None:
    arrays = {
        name: values.astype(str) if values.dtype == object else values
        for name, values in _columns(fields).items()
    }
    if "scores" in fields:
        arrays[scores_kind] = fields["scores"]
    if names is not None:
        arrays["class_names"] = np.array(names, dtype=str)
    with target.open("wb") as stream:  # np.savez would add .npz to the temporary name
        np.savez(stream, **arrays)
