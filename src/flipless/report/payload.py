"""Assemble everything a report shows into JSON-able data: one main document and, separately,
one document per comparison (the page parses a comparison only when it is shown).

Main document (schema ``flipless.report/1``)::

    {"schema", "title", "flipless_version",
     "dataset": {"size", "ids", "texts", "metadata": {"names", "columns"}, "thumbnails"} | null,
     "sweep": {...} | null,            # flipless.report.points.sweep_payload, for several runs
     "comparisons": [label, ...],      # what each comparison document is
     "initial": index | null}          # the comparison shown first

Comparison documents: :func:`flipless.report.data.comparison_payload`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from flipless._version import __version__
from flipless.errors import InputError, MismatchError
from flipless.metrics.comparison import Comparison
from flipless.metrics.outcomes import NEW_CORRECT, OLD_CORRECT
from flipless.report.data import comparison_payload
from flipless.report.dataset import InstanceInputs, check_instance_inputs, dataset_payload
from flipless.report.points import sweep_payload
from flipless.report.sources import ReportSource
from flipless.report.thumbnails import Renderer

SCHEMA = "flipless.report/1"
#: Rows embedded per comparison of a sweep point by default (flips and errors first).
MAX_INSTANCES_PER_POINT = 10_000


@dataclass(frozen=True)
class Payload:
    """The main document and the comparison documents it refers to by index."""

    main: dict[str, Any]
    comparisons: list[dict[str, Any]]


def _reference(comparisons: list[tuple[str, Comparison]]) -> Comparison | None:
    """The first comparison with instances; every other one must be on the same samples."""
    with_rows = [(label, c) for label, c in comparisons if c.instances is not None]
    if not with_rows:
        return None
    first_label, first = with_rows[0]
    for label, other in with_rows[1:]:
        same_ids = np.array_equal(first.instances.ids, other.instances.ids)
        if not same_ids or not np.array_equal(first.instances.labels, other.instances.labels):
            what = "sample ids" if not same_ids else "labels"
            raise MismatchError(
                f"Comparisons {first_label!r} and {label!r} differ in their {what}; expected "
                "every comparison of one report on the same samples in the same order."
            )
    return first


def build_payload(
    source: ReportSource,
    *,
    inputs: Any = None,
    texts: Sequence[str] | None = None,
    renderer: Renderer | None = None,
    metadata: pd.DataFrame | Mapping[str, Sequence[Any]] | None = None,
    title: str | None = None,
    max_instances_per_point: int | None = MAX_INSTANCES_PER_POINT,
) -> Payload:
    """The report's data from a loaded source and the table's optional per-row additions.

    A single comparison embeds all its rows; each comparison of a sweep at most
    ``max_instances_per_point`` (None: all), negative flips first, then positive flips,
    both wrong, both right.
    """
    if max_instances_per_point is not None and (
        int(max_instances_per_point) != max_instances_per_point or max_instances_per_point < 1
    ):
        raise InputError(
            f"max_instances_per_point={max_instances_per_point!r}; expected a positive integer "
            "or None (all rows)."
        )
    reference = _reference(source.comparisons)
    given = {"inputs": inputs, "texts": texts, "renderer": renderer, "metadata": metadata}
    if reference is None:
        unused = [name for name, value in given.items() if value is not None]
        if unused:
            raise InputError(
                f"{', '.join(unused)} given, but no comparison keeps per-instance results; "
                "expected comparisons made with keep_instances=True (the default)."
            )
        additions = InstanceInputs(0)
    else:
        additions = check_instance_inputs(reference.counts.total, **given)
    limit = None if source.points is None else max_instances_per_point
    documents = [
        comparison_payload(comparison, label, additions.metadata, limit)
        for label, comparison in source.comparisons
    ]
    dataset = None
    if reference is not None:
        wrong_rows = [
            np.asarray(doc["instances"]["row"])[
                (np.asarray(doc["instances"]["code"]) & (OLD_CORRECT | NEW_CORRECT))
                != (OLD_CORRECT | NEW_CORRECT)
            ]
            for doc in documents
            if doc["instances"] is not None
        ]
        thumbnail_rows = np.unique(np.concatenate(wrong_rows)) if wrong_rows else np.zeros(0, int)
        dataset = dataset_payload(reference.instances.ids, additions, thumbnail_rows)
    main = {
        "schema": SCHEMA,
        "title": title or _default_title(source),
        "flipless_version": __version__,
        "dataset": dataset,
        "sweep": None if source.points is None else sweep_payload(source.points),
        "comparisons": [label for label, _ in source.comparisons],
        "initial": 0 if documents else None,
    }
    return Payload(main, documents)


def _default_title(source: ReportSource) -> str:
    if source.points is None:
        return f"flipless report: {source.comparisons[0][0]}"
    return f"flipless report: {len(source.points)} runs"
