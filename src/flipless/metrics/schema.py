"""JSON form of a :class:`Comparison`, with a versioned schema.

The document stores the counts (per class, per slice group, the flip matrix), the settings of
the significance estimates, the top regressions, and, for readers, the derived rates and
significance: a summary, whose size does not grow with the number of samples. The outcome of
every sample goes, when asked for, to a Parquet file beside it
(:mod:`flipless.metrics.instance_file`) that the document names in ``instances_file``
(relative to the document's folder); :func:`read_comparison` reads it back with the
document. Reading rebuilds the comparison from the counts alone (the derived parts are
recomputed and checked against the stored ones, and instances must give back the per-class
counts), so a tampered or truncated file is an error rather than a silently wrong number.

Schema ``flipless.comparison`` version 2::

    {"schema": "flipless.comparison", "schema_version": 2, "flipless_version": str,
     "num_classes": K, "class_names": [str] | null, "top_k": int,
     "settings": {"confidence": float, "n_bootstrap": int, "seed": int},
     "counts": {total, both_correct, negative_flips, positive_flips,
                both_wrong_same, both_wrong_different},
     "rates": {name: {"value": float | null, "numerator": int, "denominator": int,
                      "reason": str | null}},
     "significance": {"mcnemar": {...}, "intervals": {name: {estimate, low, high, confidence}}},
     "class_outcomes": [[8 ints] × K], "flip_matrix": [[K ints] × K],
     "slices": {name: {"groups": [...], "outcomes": [[8 ints] × G]}},
     "top_regressions": [{"id", "label", "old_pred", "new_pred", "old_confidence"?,
                          "new_confidence"?, "label_name"?, "old_pred_name"?,
                          "new_pred_name"?}] | null,
     "instances_file": str | null,
     "instances": {"ids", "labels", "old_pred", "new_pred", "codes",
                   "old_confidence"?, "new_confidence"?} | null,
     "restriction"?: {"old_classes": [int], "num_classes": K, "excluded": int,
                      "total": int, "new_correct": int | null, "reason": str}}

``restriction`` is present only when the counts cover just the examples whose label the old
model knew (``compare(..., old_classes=...)``, :mod:`flipless.metrics.restriction`); documents
without it, written before it existed, read as before, and the key adds nothing an older
reader would miscount (the counts are those of the examples counted).

``top_regressions`` lists the most confident negative flips (:meth:`Comparison.top_regressions`;
those a read document listed, for a comparison without per-instance outcomes; else null). ``instances`` (the outcome of every
sample, inline) is null in files written by :func:`write_comparison`; documents built in memory
with ``to_dict(instances=True)`` carry it. Version 1 documents, which had no
``top_regressions`` or ``instances_file`` and kept the instances inline, are read as before.

NaN is written as ``null`` (JSON has no NaN).

This module stands below :mod:`flipless.metrics.comparison`: it reads what a document stores
from any object with a comparison's attributes (:class:`StoredComparison`), and reading a
document builds the comparison with the class it is given (``Comparison.from_dict`` passes
itself).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from flipless import remote
from flipless._version import __version__
from flipless.errors import FileFormatError, FliplessError, FliplessWarning, MissingFileError
from flipless.metrics.counts import FlipCounts
from flipless.metrics.instance_file import read_instances, top_regression_rows, write_instances
from flipless.metrics.outcomes import NUM_OUTCOMES, group_outcomes
from flipless.metrics.parts import Instances, SliceTable
from flipless.metrics.restriction import OldClassRestriction
from flipless.metrics.significance import Significance

SCHEMA = "flipless.comparison"
SCHEMA_VERSION = 2
#: Versions this module reads: 1 kept the instances inline; 2 adds the top regressions and
#: the instances file.
READABLE_VERSIONS = (1, 2)
#: How many top regressions a document lists unless told otherwise.
TOP_REGRESSIONS = 10


class StoredComparison(Protocol):
    """What a document stores of a comparison: its settings, its tables, its derived numbers."""

    class_outcomes: np.ndarray
    class_names: tuple[str, ...] | None
    top_k: int
    slices: dict[str, SliceTable]
    instances: Instances | None
    confidence: float
    n_bootstrap: int
    seed: int
    restriction: OldClassRestriction | None
    listed_regressions: list[dict[str, Any]] | None

    @property
    def num_classes(self) -> int: ...

    @property
    def flip_matrix(self) -> np.ndarray: ...

    @property
    def counts(self) -> FlipCounts: ...

    @property
    def significance(self) -> Significance: ...


Built = TypeVar("Built", bound=StoredComparison)


def _clean(value: Any) -> Any:
    """Make a value JSON-safe: NaN → None, numpy scalars → Python."""
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _array(values: np.ndarray) -> list[Any]:
    return _clean(values.tolist())


def comparison_to_dict(
    comparison: StoredComparison, instances: bool = True, top_regressions: int = TOP_REGRESSIONS
) -> dict[str, Any]:
    """The JSON-ready document of a comparison (see the module docstring); ``instances``
    puts every sample's outcome inline, ``top_regressions`` rows are listed in any case."""
    significance = comparison.significance
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "flipless_version": __version__,
        "num_classes": comparison.num_classes,
        "class_names": list(comparison.class_names) if comparison.class_names else None,
        "top_k": comparison.top_k,
        "settings": {
            "confidence": comparison.confidence,
            "n_bootstrap": comparison.n_bootstrap,
            "seed": comparison.seed,
        },
        "counts": comparison.counts.as_dict(),
        "rates": {name: asdict(rate) for name, rate in comparison.counts.rates().items()},
        "significance": {
            "mcnemar": asdict(significance.mcnemar),
            "intervals": {name: asdict(i) for name, i in significance.intervals.items()},
        },
        "class_outcomes": _array(comparison.class_outcomes),
        "flip_matrix": _array(comparison.flip_matrix),
        "slices": {
            name: {"groups": _clean(list(table.groups)), "outcomes": _array(table.outcomes)}
            for name, table in comparison.slices.items()
        },
        "top_regressions": _top_regressions(comparison, top_regressions),
        "instances_file": None,
        "instances": None,
    }
    if instances and comparison.instances is not None:
        kept = comparison.instances
        document["instances"] = {
            "ids": _array(kept.ids),
            "labels": _array(kept.labels),
            "old_pred": _array(kept.old_pred),
            "new_pred": _array(kept.new_pred),
            "codes": _array(kept.codes),
        }
        for name in ("old_confidence", "new_confidence"):
            if getattr(kept, name) is not None:
                document["instances"][name] = _array(getattr(kept, name))
    if comparison.restriction is not None:
        document["restriction"] = comparison.restriction.to_dict()
    return _clean(document)


def _top_regressions(comparison: StoredComparison, count: int) -> list[dict[str, Any]] | None:
    """The ``count`` most confident negative flips as records; without instances, those a
    document listed (None if none)."""
    kept = comparison.instances
    if kept is None:
        return comparison.listed_regressions
    rows = top_regression_rows(kept, count)
    columns = {
        "id": kept.ids[rows],
        "label": kept.labels[rows],
        "old_pred": kept.old_pred[rows],
        "new_pred": kept.new_pred[rows],
    }
    for name in ("old_confidence", "new_confidence"):
        if getattr(kept, name) is not None:
            columns[name] = getattr(kept, name)[rows]
    if comparison.class_names:
        names = np.asarray(comparison.class_names, dtype=object)
        for name in ("label", "old_pred", "new_pred"):
            columns[f"{name}_name"] = names[columns[name]]
    listed = {name: _array(values) for name, values in columns.items()}
    return [{name: listed[name][i] for name in listed} for i in range(rows.size)]


def _counts_table(values: Any, columns: int, what: str) -> np.ndarray:
    table = np.asarray(values, dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != columns or (table < 0).any():
        raise FileFormatError(
            f"'{what}' is not a table of non-negative counts with {columns} columns."
        )
    return table


def comparison_from_dict(
    document: dict[str, Any], build: Callable[..., Built], instances: Instances | None = None
) -> Built:
    """Rebuild a comparison (``build(...)``) from :func:`comparison_to_dict`'s document, checked;
    ``instances`` (read from an instances file) stand in for inline ones."""
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        found = document.get("schema") if isinstance(document, dict) else type(document).__name__
        raise FileFormatError(f"Expected a '{SCHEMA}' JSON document; found schema {found!r}.")
    version = document.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise FileFormatError(
            f"This comparison uses schema version {version!r}; this flipless reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}. Upgrade flipless or re-create the "
            "comparison."
        )
    try:
        num_classes = int(document["num_classes"])
        settings = document["settings"]
        class_outcomes = _counts_table(document["class_outcomes"], 8, "class_outcomes")
        restriction = document.get("restriction")
        comparison = build(
            class_outcomes=class_outcomes,
            flip_matrix=_counts_table(document["flip_matrix"], num_classes, "flip_matrix"),
            class_names=document.get("class_names"),
            top_k=int(document["top_k"]),
            slices={
                name: SliceTable(
                    name,
                    tuple(table["groups"]),
                    _counts_table(table["outcomes"], 8, f"slices.{name}"),
                )
                for name, table in document.get("slices", {}).items()
            },
            instances=_instances(document.get("instances")) if instances is None else instances,
            listed_regressions=document.get("top_regressions"),
            confidence=float(settings["confidence"]),
            n_bootstrap=int(settings["n_bootstrap"]),
            seed=int(settings["seed"]),
            restriction=None
            if restriction is None
            else OldClassRestriction.from_dict(restriction, int(class_outcomes.sum())),
        )
    except FileFormatError:  # a ValueError too, but it already says what is wrong
        raise
    except (KeyError, TypeError, ValueError) as error:  # InputError is a ValueError
        raise FileFormatError(
            f"The comparison document is incomplete or malformed ({error!r})."
        ) from error
    if comparison.counts.as_dict() != document.get("counts"):
        raise FileFormatError(
            "The stored dataset counts do not equal the sum of the per-class counts; the file was "
            "edited or corrupted."
        )
    _check_instances(comparison)
    return comparison


def _check_instances(comparison: StoredComparison) -> None:
    """The instances must have one row per counted sample and give back the class counts."""
    kept = comparison.instances
    if kept is None:
        return
    if any(
        len(column) != comparison.counts.total
        for column in (kept.ids, kept.labels, kept.old_pred, kept.new_pred, kept.codes)
    ):
        raise FileFormatError(
            f"The stored instances do not have one row per counted sample "
            f"({comparison.counts.total}); the file was edited or corrupted, or the instances "
            "belong to another comparison."
        )
    num_classes = comparison.class_outcomes.shape[0]
    in_range = ((kept.labels >= 0) & (kept.labels < num_classes)).all() and (
        kept.codes < NUM_OUTCOMES
    ).all()
    if not in_range or not np.array_equal(
        group_outcomes(kept.codes.astype(np.int64), kept.labels, num_classes),
        comparison.class_outcomes,
    ):
        raise FileFormatError(
            "The stored instances do not give back the comparison's per-class counts; the "
            "file was edited or corrupted, or the instances belong to another comparison."
        )


def _instances(stored: dict[str, Any] | None) -> Instances | None:
    if stored is None:
        return None

    def optional(name: str) -> np.ndarray | None:
        values = stored.get(name)
        return None if values is None else np.asarray(values, dtype=np.float32)

    return Instances(
        sample_ids=np.asarray(stored["ids"]),
        labels=np.asarray(stored["labels"], dtype=np.int64),
        old_pred=np.asarray(stored["old_pred"], dtype=np.int64),
        new_pred=np.asarray(stored["new_pred"], dtype=np.int64),
        codes=np.asarray(stored["codes"], dtype=np.uint8),
        old_confidence=optional("old_confidence"),
        new_confidence=optional("new_confidence"),
    )


def write_json(document: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``document`` atomically (a temporary file, then a rename or one upload).

    ``path`` may be a URL (``s3://bucket/comparison.json``; see :mod:`flipless.remote`).
    """
    try:
        remote.write_text(path, json.dumps(document, indent=1, allow_nan=False) + "\n")
    except OSError as error:
        raise FliplessError(f"Could not write {path}: {error.strerror or error}.") from error


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; missing, unreadable or invalid files are a :class:`FileFormatError`."""
    try:
        return json.loads(remote.read_text(path))
    except FileNotFoundError as error:
        raise MissingFileError(f"No such file: {path}.") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FileFormatError(f"{path} is not a readable JSON file ({error}).") from error


def instances_path_beside(path: str | os.PathLike[str]) -> str | Path:
    """The default instances file of the document ``path``: ``c.json`` → ``c.instances.parquet``."""
    name = remote.name_of(path)
    stem = name[: -len(".json")] if name.lower().endswith(".json") else name
    return remote.sibling(path, f"{stem}.instances.parquet")


def recorded_path(
    instances_path: str | os.PathLike[str], document_path: str | os.PathLike[str] | None
) -> str:
    """How a document records its instances file: relative to the document's folder (the
    working folder for a document without a path, such as one printed) when both are local
    and the file is beside or below it; else the absolute path, or the URL as given."""
    if remote.is_remote(instances_path) or (
        document_path is not None and remote.is_remote(document_path)
    ):
        return str(instances_path)
    folder = Path.cwd() if document_path is None else Path(document_path).resolve().parent
    target = Path(instances_path).resolve()
    return target.relative_to(folder).as_posix() if target.is_relative_to(folder) else str(target)


def write_comparison(
    comparison: StoredComparison,
    path: str | os.PathLike[str] | None,
    instances: bool | str | os.PathLike[str] = True,
    top_regressions: int = TOP_REGRESSIONS,
) -> dict[str, Any]:
    """Write the summary document of ``comparison`` to ``path`` (atomically) and return it.

    ``instances``: True writes every sample's outcome to the Parquet file beside ``path``
    (:func:`instances_path_beside`), a path writes it there, False writes none; the document
    names the file in ``instances_file``. Nothing is written for a comparison without
    per-instance outcomes, or when ``path`` is None (the document alone is returned).
    """
    document = comparison_to_dict(comparison, instances=False, top_regressions=top_regressions)
    if path is None:
        return document
    if instances is not False and comparison.instances is not None:
        target = instances_path_beside(path) if instances is True else remote.as_path(instances)
        write_instances(comparison.instances, target)
        document["instances_file"] = recorded_path(target, path)
    write_json(document, path)
    return document


def read_comparison(
    path: str | os.PathLike[str],
    build: Callable[..., Built],
    instances: str | os.PathLike[str] | None = None,
) -> Built:
    """Read a comparison document and its per-instance outcomes.

    The outcomes come from ``instances`` (an instances file) when given, else from the
    document itself (version 1 kept them inline), else from the file its ``instances_file``
    names (relative to the document's folder). When that file is gone the comparison keeps
    counts only and a :class:`~flipless.errors.FliplessWarning` says so. Instances that do
    not give back the document's counts are a :class:`~flipless.errors.FileFormatError`.
    """
    document = read_json(path)
    recorded = document.get("instances_file") if isinstance(document, dict) else None
    if instances is None and recorded:
        located = recorded if remote.is_remote(recorded) else remote.join(_folder(path), recorded)
        if remote.is_file(located):
            instances = located
        else:
            warnings.warn(
                f"{path} names the instances file {recorded!r}, which is not at {located}; the "
                "comparison keeps counts only. Copy the file beside the JSON, or pass its path "
                "(flipless report --instances).",
                FliplessWarning,
                stacklevel=3,
            )
    return comparison_from_dict(
        document, build, None if instances is None else read_instances(instances)
    )


def _folder(path: str | os.PathLike[str]) -> str | Path:
    """The folder holding ``path`` (a URL's parent for remote paths)."""
    if remote.is_remote(path):
        return str(path).rsplit("/", 1)[0]
    return Path(path).parent
