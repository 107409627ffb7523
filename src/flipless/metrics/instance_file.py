"""The per-instance outcomes of a comparison as a Parquet file, beside its summary JSON.

A comparison JSON (:mod:`flipless.metrics.schema`) holds counts, rates and the top
regressions: its size does not grow with the number of samples. The outcome of every sample
goes, when asked for, to a columnar file with one row per sample, in the comparison's order:

=================  ===========================================================================
column             content
=================  ===========================================================================
id                 the sample id (int64 or text; JSON text for ids of mixed types)
label              the true class index (int64)
old_pred           the old model's predicted class index (int64)
new_pred           the new model's predicted class index (int64)
code               the outcome code (uint8; :mod:`flipless.metrics.outcomes`)
old_correct        whether the old model was right (top-k when the comparison is top-k)
new_correct        whether the new model was right
negative_flip      old right, new wrong
positive_flip      old wrong, new right
old_confidence     the old model's probability of its answer (float32), when it gave scores
new_confidence     the same for the new model
=================  ===========================================================================

The flags repeat what ``code`` says, so that ``pandas.read_parquet(path).query("negative_flip")``
needs no decoding. The file's metadata name its schema (``flipless.instances`` version 1) and
how its ids are stored. Every row is kept (not only the flips): the report's table, its slice
filters and its per-row views need the samples both models got right too, and counting the
rows must give back the comparison's counts, which :func:`read_instances`'s callers check.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flipless import remote
from flipless.errors import FileFormatError
from flipless.metrics.parts import Instances

INSTANCES_SCHEMA = "flipless.instances"
INSTANCES_SCHEMA_VERSION = 1
#: How the ids are stored: as they are (int64 or text), row numbers, or JSON text.
ID_ENCODINGS = ("plain", "row-number", "json")
_CONFIDENCES = ("old_confidence", "new_confidence")


def _id_column(instances: Instances) -> tuple[pa.Array, str]:
    """The ids as an Arrow column and how they are encoded."""
    if instances.sample_ids is None:
        return pa.array(np.arange(instances.codes.shape[0], dtype=np.int64)), "row-number"
    ids = instances.sample_ids
    if ids.dtype.kind in "iu":
        return pa.array(ids.astype(np.int64, copy=False)), "plain"
    if ids.dtype.kind == "U" or all(isinstance(value, str) for value in ids.tolist()):
        return pa.array(ids.astype(object), type=pa.string()), "plain"
    return pa.array([json.dumps(value) for value in ids.tolist()], type=pa.string()), "json"


def instances_table(instances: Instances) -> pa.Table:
    """The Arrow table written by :func:`write_instances` (schema in the module docstring)."""
    ids, encoding = _id_column(instances)
    columns: dict[str, Any] = {
        "id": ids,
        "label": instances.labels,
        "old_pred": instances.old_pred,
        "new_pred": instances.new_pred,
        "code": instances.codes.astype(np.uint8, copy=False),
        "old_correct": instances.old_correct,
        "new_correct": instances.new_correct,
        "negative_flip": instances.negative_flip,
        "positive_flip": instances.positive_flip,
    }
    for name in _CONFIDENCES:
        if getattr(instances, name) is not None:
            columns[name] = getattr(instances, name)
    table = pa.table(columns)
    metadata = {
        "schema": INSTANCES_SCHEMA,
        "schema_version": str(INSTANCES_SCHEMA_VERSION),
        "id_encoding": encoding,
    }
    return table.replace_schema_metadata({f"flipless.{k}": v for k, v in metadata.items()})


def write_instances(instances: Instances, path: str | os.PathLike[str]) -> None:
    """Write every sample's outcome to the Parquet file ``path``, atomically (a local
    temporary file, then a rename or one upload; ``path`` may be a URL)."""
    table = instances_table(instances)
    try:
        with remote.atomic_local_file(path) as local:
            pq.write_table(table, local)
    except OSError as error:
        raise FileFormatError(f"Could not write {path}: {error.strerror or error}.") from error


def read_instances(path: str | os.PathLike[str]) -> Instances:
    """Read a file written by :func:`write_instances`; anything else is a FileFormatError."""
    if not remote.is_file(path):
        raise FileFormatError(
            f"No instances file at {path}; expected the Parquet file written by flipless "
            "compare --instances (or Comparison.to_json). Check the path."
        )
    try:
        with remote.open_for_reading(path) as stream:
            table = pq.read_table(stream)
    except (OSError, pa.ArrowException) as error:
        raise FileFormatError(
            f"{path} could not be read as Parquet ({error}); expected the instances file "
            "written by flipless compare --instances."
        ) from error
    metadata = {
        key.decode(): value.decode() for key, value in (table.schema.metadata or {}).items()
    }
    if metadata.get("flipless.schema") != INSTANCES_SCHEMA:
        raise FileFormatError(
            f"{path} is not a flipless instances file (its metadata name schema "
            f"{metadata.get('flipless.schema')!r}, expected {INSTANCES_SCHEMA!r}); pass the "
            "file written by flipless compare --instances."
        )
    version = metadata.get("flipless.schema_version")
    if version != str(INSTANCES_SCHEMA_VERSION):
        raise FileFormatError(
            f"{path} uses instances schema version {version!r}; this flipless reads version "
            f"{INSTANCES_SCHEMA_VERSION}. Upgrade flipless or write the file again."
        )
    encoding = metadata.get("flipless.id_encoding")
    if encoding not in ID_ENCODINGS:
        raise FileFormatError(f"{path}: unknown id encoding {encoding!r}; the file is corrupted.")
    try:
        return _instances_from(table, encoding)
    except (KeyError, ValueError, TypeError, pa.ArrowException) as error:
        raise FileFormatError(
            f"{path} lacks a column or holds values of the wrong type ({error}); expected the "
            "columns id, label, old_pred, new_pred and code written by flipless."
        ) from error


def _instances_from(table: pa.Table, encoding: str) -> Instances:
    def values(name: str, dtype: Any) -> np.ndarray:
        return table.column(name).to_numpy().astype(dtype, copy=False)

    sample_ids = None
    if encoding == "plain":
        sample_ids = table.column("id").to_numpy(zero_copy_only=False)
    elif encoding == "json":
        sample_ids = np.array(
            [json.loads(text) for text in table.column("id").to_pylist()], dtype=object
        )
    names = table.column_names
    return Instances(
        labels=values("label", np.int64),
        old_pred=values("old_pred", np.int64),
        new_pred=values("new_pred", np.int64),
        codes=values("code", np.uint8),
        sample_ids=sample_ids,
        old_confidence=values("old_confidence", np.float32) if _CONFIDENCES[0] in names else None,
        new_confidence=values("new_confidence", np.float32) if _CONFIDENCES[1] in names else None,
    )


def top_regression_rows(instances: Instances, count: int) -> np.ndarray:
    """Rows of the ``count`` negative flips to look at first: the new model's most confident
    mistakes (input order among equal confidences), or the first in input order without
    scores. The order of :meth:`Comparison.top_regressions`, without building a frame of
    every sample."""
    rows = np.flatnonzero(instances.negative_flip)
    if instances.new_confidence is not None:
        rows = rows[np.argsort(-instances.new_confidence[rows].astype(np.float64), kind="stable")]
    return rows[: max(count, 0)]
