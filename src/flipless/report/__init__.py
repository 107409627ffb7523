"""The interactive report of an update or a sweep: one self-contained HTML file, or a widget.

::

    from flipless.report import write_report
    write_report(comparison, "report.html", inputs=test_images)      # one old → new comparison
    write_report("runs/sweep/results.jsonl", "sweep.html")           # a sweep: one point per run

    from flipless.report import ReportWidget                         # Jupyter, extra [report]
    ReportWidget("runs/sweep/results.jsonl", watch=2.0)              # updates as runs finish

The layers, each a module: ``sources`` (what a report is made from) → ``data``, ``venn``,
``points`` and ``dataset`` (every number and layout, in Python) → ``payload`` (one JSON-able
document) → ``html`` (the file: inlined ``assets/report.css`` and ``assets/report.js``) or
``widget`` (the same script as an anywidget module). It reads results; it never trains.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from flipless.report.html import write_html
from flipless.report.payload import MAX_INSTANCES_PER_POINT, build_payload
from flipless.report.sources import load_source
from flipless.report.thumbnails import Renderer


def write_report(
    source: Any,
    out: str | os.PathLike[str],
    *,
    inputs: Any = None,
    texts: Sequence[str] | None = None,
    renderer: Renderer | None = None,
    metadata: pd.DataFrame | Mapping[str, Sequence[Any]] | None = None,
    title: str | None = None,
    max_instances_per_point: int | None = MAX_INSTANCES_PER_POINT,
    base_dir: str | os.PathLike[str] | None = None,
    instances: str | os.PathLike[str] | None = None,
) -> str | Path:
    """Write the report of ``source`` to the HTML file ``out`` and return its path.

    Args:
        source: a Comparison; the path of a comparison JSON; a mapping name → Comparison (several
            new models against one old model); sweep records, or the path of a sweep results
            store (.jsonl / .parquet). Paths may be URLs (``s3://…``; :mod:`flipless.remote`),
            as may ``out``.
        inputs: grey-level images (8×8 digits, 28×28 MNIST-like), one per row of the
            comparison, drawn as thumbnails of the rows where a model is wrong.
        texts: one text per row (text inputs), shown and searched in the table.
        renderer: ``renderer(row) -> PIL.Image | PNG bytes | PNG data URI``, instead of inputs.
        metadata: columns of one value per row (a DataFrame or a mapping); a column named like a
            slice lets the slice's bars filter the table.
        title: the page's title (default: what the source is).
        max_instances_per_point: rows embedded per comparison of a sweep (None: all); a single
            comparison always embeds all its rows.
        base_dir: where the ``comparison_path`` of records given as a list are relative to
            (default: the working directory; a store path uses its own folder).
        instances: the instances file of a comparison JSON ``source`` (``flipless compare
            --instances``), when it is not where the JSON's ``instances_file`` says.
    """
    payload = build_payload(
        load_source(source, base_dir=base_dir, instances=instances),
        inputs=inputs,
        texts=texts,
        renderer=renderer,
        metadata=metadata,
        title=title,
        max_instances_per_point=max_instances_per_point,
    )
    return write_html(payload, out)


def __getattr__(name: str) -> Any:
    # ReportWidget needs anywidget (extra [report]): build the class only when asked for.
    if name == "ReportWidget":
        from flipless.report.widget import widget_class

        return widget_class()
    raise AttributeError(f"module 'flipless.report' has no attribute {name!r}")


__all__ = ["ReportWidget", "write_report"]
