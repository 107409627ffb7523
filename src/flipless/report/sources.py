"""What a report can be made from, read into comparisons and (for sweeps) points.

* a :class:`~flipless.metrics.comparison.Comparison`, or the path of one written by
  ``Comparison.to_json`` / ``flipless compare --json`` (``.json``): one comparison, with the
  per-instance outcomes of the instances file its JSON names (``instances_file``, relative to
  the JSON's folder; ``flipless compare --instances``), or of ``instances`` when given (a file
  that was moved or renamed); without either, the report shows counts only;
* a mapping of names to comparisons (several new models, each against the same old model on
  the same samples, e.g. the demo's methods): one point each;
* sweep records (schema ``flipless.sweep-record/1``), as a list of dicts or the path of a
  results store (``.jsonl`` / ``.parquet``, read by ``flipless.sweep.store.read_records``):
  one point each, with the comparison its ``comparison_path`` names (relative to the store's
  folder, or to ``base_dir`` for a list) when that file exists.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flipless import remote
from flipless.errors import FileFormatError, FliplessWarning, InputError, MissingFileError
from flipless.metrics.comparison import Comparison
from flipless.report.points import Point, point_from_comparison, point_from_record

STORE_SUFFIXES = (".jsonl", ".parquet")


@dataclass(frozen=True)
class ReportSource:
    """Comparisons (label, comparison) and, for several runs, their points (None for one)."""

    comparisons: list[tuple[str, Comparison]]
    points: list[Point] | None


def load_source(
    source: Any,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    instances: str | os.PathLike[str] | None = None,
) -> ReportSource:
    """Read any accepted source (see the module docstring); ``instances`` only goes with the
    path of a comparison JSON."""
    if instances is not None and not (
        isinstance(source, (str, os.PathLike)) and remote.suffix_of(source).lower() == ".json"
    ):
        given = (
            f"{source}, which is not a comparison JSON (.json)"
            if isinstance(source, (str, os.PathLike))
            else f"a {type(source).__name__}"
        )
        raise InputError(
            f"An instances file ({instances}) was given for {given}; an instances file belongs "
            "to one comparison JSON. Pass the comparison's .json path with it, or leave out "
            "instances= (CLI --instances)."
        )
    if isinstance(source, Comparison):
        return ReportSource([("old → new", source)], None)
    if isinstance(source, (str, os.PathLike)):
        return _from_path(remote.as_path(source), instances)
    if isinstance(source, Mapping):
        return _from_named(source)
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        return from_records(
            list(source), Path.cwd() if base_dir is None else remote.as_path(base_dir)
        )
    raise InputError(
        f"Cannot make a report from a {type(source).__name__}; expected a Comparison, a mapping "
        "of name → Comparison, a list of sweep records, or the path of a comparison JSON or a "
        "sweep results store (.jsonl / .parquet)."
    )


def _from_path(path: str | Path, instances: str | os.PathLike[str] | None = None) -> ReportSource:
    if not remote.is_file(path):
        raise MissingFileError(
            f"No such file: {path}; expected a comparison JSON (flipless compare --json) or a "
            "sweep results store (.jsonl / .parquet)."
        )
    suffix = remote.suffix_of(path)
    if suffix.lower() in STORE_SUFFIXES:
        from flipless.sweep.store import read_records

        return from_records(read_records(path), remote.parent_of(path))
    if suffix.lower() == ".json":
        stem = remote.name_of(path).removesuffix(suffix)
        comparison = Comparison.from_json(str(path), None if instances is None else str(instances))
        return ReportSource([(stem, comparison)], None)
    raise FileFormatError(
        f"{path} has suffix {suffix!r}; expected .json (a comparison) or .jsonl / .parquet "
        "(a sweep results store)."
    )


def _from_named(named: Mapping[Any, Any]) -> ReportSource:
    if not named:
        raise InputError("The mapping of comparisons is empty; expected at least one.")
    comparisons, points = [], []
    for name, comparison in named.items():
        if not isinstance(comparison, Comparison):
            raise InputError(
                f"Entry {name!r} is a {type(comparison).__name__}; expected a Comparison."
            )
        points.append(point_from_comparison(str(name), comparison, len(comparisons)))
        comparisons.append((str(name), comparison))
    return ReportSource(comparisons, points)


def from_records(records: list[Any], base_dir: str | Path) -> ReportSource:
    """Points from sweep records, each with its comparison when its file exists."""
    if not records:
        raise InputError("The sweep has no records yet; expected at least one finished point.")
    comparisons: list[tuple[str, Comparison]] = []
    points = []
    for position, record in enumerate(records):
        point = point_from_record(record, position)
        relative = record.get("comparison_path")
        if relative:
            path = remote.join(base_dir, relative)
            if remote.is_file(path):
                point = dataclasses.replace(point, comparison=len(comparisons))
                comparisons.append((point.label, Comparison.from_json(str(path))))
            else:
                warnings.warn(
                    f"Point {point.point_id!r}: its comparison {path} does not exist; the point "
                    "is plotted without a comparison to show.",
                    FliplessWarning,
                    stacklevel=3,
                )
        points.append(point)
    return ReportSource(comparisons, points)
