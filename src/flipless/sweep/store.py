"""The results store: one record per finished point, appended as soon as the point finishes.

Two formats, chosen by the file's suffix:

* ``.jsonl`` (JSON lines, UTF-8): each record is one line, written with a single
  ``os.write`` to a file opened with ``O_APPEND`` and then fsync'ed, so a record is either
  entirely there or, when the process is killed mid-write, a torn last line without its
  newline. Reading ignores a torn last line with a :class:`~flipless.errors.FliplessWarning`;
  :class:`ResultsStore` truncates it before its first append. Any other unreadable line is a
  :class:`~flipless.errors.FileFormatError` (the file was changed by something else).
* ``.parquet``: one row per record, the nested fields (``config``, ``metrics``,
  ``versions``, …) as JSON strings. Parquet files cannot be appended to, so every append
  reads the whole file, writes it again with the new row to a temporary file and renames it
  over the store: atomic, but O(records) per append, so a sweep of n points writes O(n²)
  rows in all. Prefer JSON lines for sweeps of thousands of points. A key that only some
  records have reads back as null in the others.

A store is read from a local path or a URL (``s3://bucket/sweep/results.jsonl``; see
:mod:`flipless.remote`), so a report can be made from a sweep in object storage.
:class:`ResultsStore` appends to a local file only (fsync'ed lines, one writer); a sweep whose
store is a URL appends to a local staging copy and uploads the whole store after each record
(:mod:`flipless.sweep.remote_store`), since object stores replace objects whole.

NaN metrics are stored as null. When two records share a ``point_id`` (which the sweep never
writes), the first one counts and a warning says so. Reading needs neither torch nor the
training code (the report reads stores).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from flipless import remote
from flipless.errors import FileFormatError, FliplessWarning, InputError

RECORD_SCHEMA = "flipless.sweep-record/1"
#: Record fields stored as JSON text in Parquet files (the file's metadata also lists them).
_JSON_COLUMNS_KEY = b"flipless.json_columns"


def to_json_value(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): to_json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(item) for item in value]
    return value


def encode_record(record: dict[str, Any]) -> bytes:
    """One JSON line (with its newline) for a record; checks the two keys the store relies on."""
    if not isinstance(record, dict) or not isinstance(record.get("point_id"), str):
        raise InputError(f"a sweep record is a dict with a string point_id; got {record!r:.200}.")
    if record.get("schema") != RECORD_SCHEMA:
        raise InputError(
            f"record {record['point_id']!r} has schema {record.get('schema')!r}; expected "
            f"{RECORD_SCHEMA!r}."
        )
    try:
        text = json.dumps(to_json_value(record), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise InputError(
            f"record {record['point_id']!r} is not JSON-able ({error}); convert the value."
        ) from error
    return (text + "\n").encode("utf-8")


def _check_record(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("point_id"), str):
        raise FileFormatError(f"{where}: expected a sweep record (an object with a point_id).")
    if value.get("schema") != RECORD_SCHEMA:
        raise FileFormatError(
            f"{where}: schema {value.get('schema')!r}; expected {RECORD_SCHEMA!r}. The file "
            "was written by another version or program."
        )
    return value


def _first_of_each(records: list[dict[str, Any]], path: str | Path) -> list[dict[str, Any]]:
    seen: set[str] = set()
    kept = []
    for record in records:
        if record["point_id"] in seen:
            warnings.warn(
                f"{path}: point {record['point_id']!r} has more than one record; the first one "
                "counts, the later ones are ignored.",
                FliplessWarning,
                stacklevel=3,
            )
            continue
        seen.add(record["point_id"])
        kept.append(record)
    return kept


def _complete_length(path: str | Path, data: bytes) -> int:
    """The length of the complete lines of a JSON-lines file; warns about a torn last line."""
    end = data.rfind(b"\n") + 1
    if end < len(data):
        warnings.warn(
            f"{path}: the last record is incomplete ({len(data) - end} bytes without a newline: "
            "the sweep was killed while writing it); it is ignored and that point runs again.",
            FliplessWarning,
            stacklevel=4,
        )
    return end


def _read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    data = remote.read_bytes(path)
    complete = data[: _complete_length(path, data)]
    records = []
    for number, line in enumerate(complete.split(b"\n")[:-1], start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            value = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise FileFormatError(
                f"{where} is not a JSON record ({error}); the store was changed by something "
                "other than flipless. Remove or repair that line."
            ) from error
        records.append(_check_record(value, where))
    return records


def _read_parquet(path: str | Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        with remote.open_for_reading(path) as stream:
            table = pq.read_table(stream)
    except FileFormatError:
        raise
    except Exception as error:  # pyarrow raises several kinds (ArrowInvalid, OSError, …)
        raise FileFormatError(f"cannot read {path} as Parquet: {error}") from error
    metadata = table.schema.metadata or {}
    json_columns = json.loads(metadata.get(_JSON_COLUMNS_KEY, b"[]"))
    records = []
    for number, row in enumerate(table.to_pylist(), start=1):
        for column in json_columns:
            if row.get(column) is not None:
                row[column] = json.loads(row[column])
        records.append(_check_record(row, f"{path}, row {number}"))
    return records


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a store, in the order they were appended, one per ``point_id``.

    A missing file is an empty store; ``path`` may be a URL. See the module docstring for torn
    lines and duplicates.
    """
    path = remote.as_path(path)
    suffix = remote.suffix_of(path)
    if suffix not in (".jsonl", ".parquet"):
        raise InputError(f"{path}: expected a results store ending in .jsonl or .parquet.")
    if not remote.exists(path):
        return []
    records = _read_jsonl(path) if suffix == ".jsonl" else _read_parquet(path)
    return _first_of_each(records, path)


class ResultsStore:
    """Appends records to a store; the only writer of a sweep (the parent process).

    Opening it repairs a JSON-lines store whose last line is torn (truncating it, with a
    warning) and removes temporary files a killed Parquet append left behind.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if remote.is_remote(path):
            raise InputError(
                f"ResultsStore({str(path)!r}): a ResultsStore appends to a local file; give a "
                "local path. A sweep whose store is a URL (run_sweep, flipless sweep) stages it "
                "locally and uploads it after each record (flipless.sweep.remote_store)."
            )
        self.path = remote.local_path(path)
        if self.path.suffix not in (".jsonl", ".parquet"):
            raise InputError(f"{self.path}: expected a store ending in .jsonl or .parquet.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.suffix == ".jsonl" and self.path.exists():
            data = self.path.read_bytes()
            end = _complete_length(self.path, data)
            if end < len(data):
                os.truncate(self.path, end)
        if self.path.suffix == ".parquet":
            for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                leftover.unlink()

    def records(self) -> list[dict[str, Any]]:
        """What :func:`read_records` returns for this store."""
        return read_records(self.path)

    def append(self, record: dict[str, Any]) -> None:
        """Append one record, durably (fsync), as the module docstring describes."""
        line = encode_record(record)
        if self.path.suffix == ".jsonl":
            self._append_line(line)
        else:
            self._rewrite_parquet(json.loads(line))

    def _append_line(self, line: bytes) -> None:
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(descriptor, line)
            while written < len(line):  # a regular file takes it in one write; be safe anyway
                written += os.write(descriptor, line[written:])
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def _rewrite_parquet(self, record: dict[str, Any]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [*read_records(self.path), record]
        json_columns = sorted(
            {key for row in rows for key, value in row.items() if isinstance(value, (dict, list))}
        )
        keys = list(dict.fromkeys(key for row in rows for key in row))
        flat = [
            {
                key: json.dumps(row[key])
                if key in json_columns and row.get(key) is not None
                else row.get(key)
                for key in keys
            }
            for row in rows
        ]
        table = pa.Table.from_pylist(flat)
        table = table.replace_schema_metadata({_JSON_COLUMNS_KEY: json.dumps(json_columns)})
        handle, temporary = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        os.close(handle)
        try:
            pq.write_table(table, temporary)
            descriptor = os.open(temporary, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
