"""JSON form of a :class:`Comparison`, with a versioned schema.

The document stores the counts (per class, per slice group, the flip matrix), the settings of
the significance estimates, optionally the per-instance outcomes, and, for readers, the derived
rates and significance. Reading it back rebuilds the comparison from the counts alone (the
derived parts are recomputed and checked against the stored ones), so a tampered or truncated
file is an error rather than a silently wrong number.

Schema ``flipless.comparison`` version 1::

    {"schema": "flipless.comparison", "schema_version": 1, "flipless_version": str,
     "num_classes": K, "class_names": [str] | null, "top_k": int,
     "settings": {"confidence": float, "n_bootstrap": int, "seed": int},
     "counts": {total, both_correct, negative_flips, positive_flips,
                both_wrong_same, both_wrong_different},
     "rates": {name: {"value": float | null, "numerator": int, "denominator": int,
                      "reason": str | null}},
     "significance": {"mcnemar": {...}, "intervals": {name: {estimate, low, high, confidence}}},
     "class_outcomes": [[8 ints] × K], "flip_matrix": [[K ints] × K],
     "slices": {name: {"groups": [...], "outcomes": [[8 ints] × G]}},
     "instances": {"ids", "labels", "old_pred", "new_pred", "codes",
                   "old_confidence"?, "new_confidence"?} | null,
     "restriction"?: {"old_classes": [int], "num_classes": K, "excluded": int,
                      "total": int, "reason": str}}

``restriction`` is present only when the counts cover just the examples whose label the old
model knew (``compare(..., old_classes=...)``, :mod:`flipless.metrics.restriction`); documents
without it, written before it existed, read as before, and the key adds nothing an older
reader would miscount (the counts are those of the examples counted).

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
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from flipless._version import __version__
from flipless.errors import FileFormatError, FliplessError
from flipless.metrics.counts import FlipCounts
from flipless.metrics.parts import Instances, SliceTable
from flipless.metrics.restriction import OldClassRestriction
from flipless.metrics.significance import Significance

SCHEMA = "flipless.comparison"
SCHEMA_VERSION = 1


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


def comparison_to_dict(comparison: StoredComparison, instances: bool = True) -> dict[str, Any]:
    """The JSON-ready document of a comparison (see the module docstring)."""
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


def _counts_table(values: Any, columns: int, what: str) -> np.ndarray:
    table = np.asarray(values, dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != columns or (table < 0).any():
        raise FileFormatError(
            f"'{what}' is not a table of non-negative counts with {columns} columns."
        )
    return table


def comparison_from_dict(document: dict[str, Any], build: Callable[..., Built]) -> Built:
    """Rebuild a comparison (``build(...)``) from :func:`comparison_to_dict`'s document, checked."""
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        found = document.get("schema") if isinstance(document, dict) else type(document).__name__
        raise FileFormatError(f"Expected a '{SCHEMA}' JSON document; found schema {found!r}.")
    version = document.get("schema_version")
    if version != SCHEMA_VERSION:
        raise FileFormatError(
            f"This comparison uses schema version {version!r}; this flipless reads version "
            f"{SCHEMA_VERSION}. Upgrade flipless or re-create the comparison."
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
            instances=_instances(document.get("instances")),
            confidence=float(settings["confidence"]),
            n_bootstrap=int(settings["n_bootstrap"]),
            seed=int(settings["seed"]),
            restriction=None
            if restriction is None
            else OldClassRestriction.from_dict(restriction, int(class_outcomes.sum())),
        )
    except (KeyError, TypeError, ValueError) as error:  # InputError is a ValueError
        raise FileFormatError(
            f"The comparison document is incomplete or malformed ({error!r})."
        ) from error
    if comparison.counts.as_dict() != document.get("counts"):
        raise FileFormatError(
            "The stored dataset counts do not equal the sum of the per-class counts; the file was "
            "edited or corrupted."
        )
    kept = comparison.instances
    if kept is not None and any(
        len(column) != comparison.counts.total
        for column in (kept.ids, kept.labels, kept.old_pred, kept.new_pred, kept.codes)
    ):
        raise FileFormatError(
            f"The stored instances do not have one row per counted sample "
            f"({comparison.counts.total}); the file was edited or corrupted."
        )
    return comparison


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
    """Write ``document`` atomically: to a temporary file beside ``path``, then rename."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n")
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise FliplessError(f"Could not write {target}: {error.strerror}.") from error


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; missing, unreadable or invalid files are a :class:`FileFormatError`."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as error:
        raise FileFormatError(f"No such file: {path}.") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FileFormatError(f"{path} is not a readable JSON file ({error}).") from error
