"""File formats to raw content: pick a prediction file's format and load it.

csv and jsonl files load into a DataFrame, parquet files into an Arrow table; npz and result
files into named numpy arrays (plus any ``class_names`` entry they hold). Finding which column
or array holds what is :mod:`flipless.io.columns`'s job; assembling a table is
:mod:`flipless.io.readers`'s.
"""

from __future__ import annotations

import json
import pickle
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from flipless import remote
from flipless.errors import FileFormatError, FliplessError, InputError
from flipless.io.columns import ID_NAMES, find
from flipless.validation import to_numpy

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

_RESULT_CONTENT = (
    "a dict of tensors {'pred': [N], 'gt': [N], 'outputs': [N, C]} saved with torch.save"
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


def load_frame(path: str | Path, kind: str, id_column: str | None) -> pd.DataFrame | pa.Table:
    """Read a csv or jsonl file into a DataFrame, a parquet file into an Arrow table (its
    columns become numpy arrays without a pandas copy); wrap the readers' errors."""
    try:
        if kind == "csv":
            return _load_csv(path, id_column)
        if kind == "parquet":
            import pyarrow.parquet as pq

            if not remote.is_remote(path):  # arrow's own file reader, not a Python stream
                return pq.read_table(path)
            with remote.open_for_reading(path) as stream:
                return pq.read_table(stream)
        return _load_jsonl(path)
    except FliplessError:  # already says what is wrong (a missing column, a missing file)
        raise
    except (OSError, ValueError, pa.ArrowException) as error:
        raise FileFormatError(
            f"{path} could not be read as {kind} ({_first_line(error)}); the file may be "
            f"truncated or not a {kind} file. Expected one row per sample."
        ) from error


def _load_csv(path: str | Path, id_column: str | None) -> pd.DataFrame:
    """Read a CSV file, its id column as text (so "007" and "1e5" stay as written)."""
    with remote.open_for_reading(path) as stream:
        header = [str(name) for name in pd.read_csv(stream, nrows=0).columns]
        id_name = find(str(path), header, ID_NAMES, id_column, "id", "column")
        stream.seek(0)
        return pd.read_csv(stream, dtype={id_name: str} if id_name is not None else None)


def _load_jsonl(path: str | Path) -> pd.DataFrame:
    """Read JSON lines: one object per non-blank line."""
    records = []
    with remote.open_for_reading(path, "r") as stream:
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


def load_npz(path: str | Path) -> tuple[dict[str, np.ndarray], Any]:
    """The arrays of an npz archive (no pickles), and its ``class_names`` entry if any."""
    try:
        with remote.open_for_reading(path) as stream:  # numpy leaves its handle open on bad zips
            archive = np.load(stream, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise FileFormatError(
                    f"{path} holds a single array of shape {archive.shape}; expected an npz "
                    "archive of named arrays (np.savez(path, ids=..., labels=..., logits=...))."
                )
            with archive:
                arrays = {name: archive[name] for name in archive.files}
    except FliplessError:  # already says what is wrong
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise FileFormatError(
            f"{path} could not be read as an npz archive ({_first_line(error)}); the file may "
            "be truncated or of another format. Expected numpy arrays saved with np.savez, "
            "without Python objects (save names as np.array(names, dtype=str))."
        ) from error
    return arrays, arrays.pop("class_names", None)


def load_result(path: str | Path) -> tuple[dict[str, np.ndarray], Any]:
    """The tensors of a torch-saved prediction dict, loaded with ``weights_only=True`` only."""
    import torch

    try:
        with warnings.catch_warnings(), remote.local_copy(path) as local:  # a URL: downloaded
            warnings.simplefilter("ignore", UserWarning)  # torch warns before refusing a pickle
            loaded = torch.load(local, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise FileFormatError(
            f"{path} is not a prediction dict that can be loaded safely: "
            f"torch.load(weights_only=True) refused it ({_unpickler_reason(error)}), so it "
            "holds objects other than tensors and plain containers, or is not a torch file. "
            f"flipless never unpickles other objects; expected {_RESULT_CONTENT} (plain "
            "tensors, no model objects or custom classes), or export the predictions to npz."
        ) from error
    except FliplessError:  # a missing or unreachable file, already said
        raise
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


def read_json(path: str | Path, strict: bool = True) -> Any:
    """A JSON document; an unreadable one raises, or gives None when not ``strict``."""
    try:
        return json.loads(remote.read_text(path))
    except (OSError, ValueError, FileFormatError) as error:
        if not strict:
            return None
        raise FileFormatError(
            f"{path} could not be read as JSON ({_first_line(error)}); expected a list of class "
            "names."
        ) from error
