"""What the instance table shows beside each sample: its id, text, metadata and thumbnail.

These are properties of the evaluation set, shared by every comparison in one report (a sweep
measures every point on the same samples). They are aligned with the comparison's rows (its
input order): ``texts[i]``, ``metadata[column][i]`` and ``renderer(i)`` describe row ``i``.
Every value reaches the page as a display string, set there as text, never as markup.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from flipless.errors import InputError, MismatchError
from flipless.report.thumbnails import Renderer, grayscale_renderer, render_thumbnails

MISSING = "(missing)"


def display_value(value: Any) -> str:
    """The text shown for one value: None and NaN as ``(missing)``, numpy scalars as Python."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return str(value)


@dataclass(frozen=True)
class InstanceInputs:
    """Checked per-instance additions: texts, metadata columns (as display strings), renderer."""

    size: int
    texts: list[str] | None = None
    metadata: dict[str, list[str]] = field(default_factory=dict)
    renderer: Renderer | None = None


def _length(values: Any) -> int:
    return len(values) if hasattr(values, "__len__") else -1


def check_instance_inputs(
    size: int,
    *,
    inputs: Any = None,
    texts: Sequence[str] | None = None,
    renderer: Renderer | None = None,
    metadata: pd.DataFrame | Mapping[str, Sequence[Any]] | None = None,
) -> InstanceInputs:
    """Check that every addition has one entry per row (``size``) and convert it for display.

    ``inputs`` are grey-level images for the default thumbnails (see
    :mod:`flipless.report.thumbnails`); ``renderer(index)`` draws row ``index`` instead. Give one
    of the two, not both.
    """
    if inputs is not None and renderer is not None:
        raise InputError(
            "Both inputs= and renderer= were given; expected one: inputs= for the default "
            "grey-level thumbnails, or renderer=callable(index) for your own."
        )
    if renderer is not None and not callable(renderer):
        raise InputError(
            f"renderer is a {type(renderer).__name__}; expected a callable(index) returning a "
            "PIL.Image, PNG bytes or a PNG data URI."
        )
    if inputs is not None:
        renderer = grayscale_renderer(inputs)
        _check_rows("inputs", _length(inputs), size)
    text_list = None
    if texts is not None:
        if isinstance(texts, str):
            raise InputError("texts is one string; expected one text per row of the comparison.")
        _check_rows("texts", _length(texts), size)
        text_list = [display_value(text) for text in texts]
    columns: dict[str, list[str]] = {}
    if metadata is not None:
        if isinstance(metadata, pd.DataFrame):
            metadata = {column: metadata[column].tolist() for column in metadata.columns}
        if not isinstance(metadata, Mapping):
            raise InputError(
                f"metadata is a {type(metadata).__name__}; expected a DataFrame or a mapping "
                "of column name → one value per row."
            )
        for name, values in metadata.items():
            _check_rows(f"metadata column {name!r}", _length(values), size)
            columns[str(name)] = [display_value(value) for value in values]
    return InstanceInputs(size, text_list, columns, renderer)


def _check_rows(what: str, length: int, size: int) -> None:
    if length != size:
        found = "no length" if length < 0 else f"{length} entries"
        raise MismatchError(
            f"{what} has {found}; expected one per row of the comparison ({size}), in the "
            "comparison's row order."
        )


def dataset_payload(
    ids: np.ndarray, additions: InstanceInputs, thumbnail_rows: np.ndarray
) -> dict[str, Any]:
    """The shared per-row data: ids, texts, metadata and thumbnails (only ``thumbnail_rows``).

    ``thumbnails`` maps row (as a string key) to a checked PNG data URI.
    """
    if ids.shape[0] != additions.size:
        raise MismatchError(
            f"The comparison has {ids.shape[0]} rows but the table inputs were checked for "
            f"{additions.size}; expected the same evaluation set."
        )
    thumbnails = (
        render_thumbnails(additions.renderer, thumbnail_rows.tolist())
        if additions.renderer is not None
        else {}
    )
    return {
        "size": int(ids.shape[0]),
        "ids": [display_value(value) for value in ids.tolist()],
        "texts": additions.texts,
        "metadata": {
            "names": list(additions.metadata),
            "columns": list(additions.metadata.values()),
        },
        "thumbnails": {str(row): uri for row, uri in thumbnails.items()},
    }
