"""Rich tables of a comparison: the summary, per-class and per-slice views, the regressions."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd
from rich.table import Table
from rich.text import Text

from flipless.metrics.counts import RATE_LABELS

if TYPE_CHECKING:
    from flipless.metrics.comparison import Comparison

#: Rates shown as percentages in the summary.
PERCENT_RATES = (
    "accuracy_old",
    "accuracy_new",
    "negative_flip_rate",
    "positive_flip_rate",
    "negative_flip_impact",
    "positive_flip_impact",
    "backward_trust_compatibility",
    "backward_error_compatibility",
)


def percent(value: float, digits: int = 2) -> str:
    """``0.0325`` → ``'3.25 %'``; NaN → ``'n/a'``."""
    return "n/a" if math.isnan(value) else f"{100 * value:.{digits}f} %"


def summary_table(comparison: Comparison) -> Table:
    """Counts, rates with their reasons when undefined, intervals and McNemar's p-value."""
    counts = comparison.counts
    significance = comparison.significance
    intervals = significance.intervals
    level = f"{100 * comparison.confidence:g} % CI"
    table = Table(
        title="old → new" + (f" (top-{comparison.top_k})" if comparison.top_k > 1 else "")
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column(level, justify="right")
    table.add_column("counts", style="dim")

    def interval(name: str, scale: float = 100.0, unit: str = " %") -> str:
        if name not in intervals or math.isnan(intervals[name].low):
            return ""
        found = intervals[name]
        return f"[{scale * found.low:.2f}, {scale * found.high:.2f}]{unit}"

    table.add_row("samples", f"{counts.total:,}", "", "")
    restriction = comparison.restriction
    if restriction is not None:
        table.add_row(
            "left out",
            f"{restriction.excluded:,}",
            "",
            f"label not among the old model's {len(restriction.old_classes)} of "
            f"{restriction.num_classes} classes; rates count the other {restriction.kept:,} "
            f"(new model on all: {percent(restriction.accuracy_new_all)})",
        )
    for name in RATE_LABELS:
        rate = counts.rate(name)
        if name == "backward_error_compatibility_bcml":
            continue
        shown = percent(rate.value) if name in PERCENT_RATES else _number(rate.value)
        scale, unit = (100.0, " %") if name in PERCENT_RATES else (1.0, "")
        table.add_row(
            RATE_LABELS[name],
            shown,
            interval(name, scale, unit),
            rate.reason or _counts_cell(name, rate.numerator, rate.denominator),
        )
        if name == "accuracy_new":
            table.add_row(
                "accuracy delta",
                f"{100 * counts.accuracy_delta:+.2f} pp",
                interval("accuracy_delta", 100.0, " pp"),
                f"{counts.positive_flips:,} fixed − {counts.negative_flips:,} broken",
            )
    test = significance.mcnemar
    table.add_row(
        "McNemar p",
        f"{test.p_value:.3g}",
        "",
        f"{test.method}, NF {test.negative_flips:,} vs PF {test.positive_flips:,}",
    )
    return table


def _counts_cell(name: str, numerator: int, denominator: int) -> str:
    if name == "relative_negative_flip_rate":
        return "NFR / (acc old · (1 − acc new))"
    return f"{numerator:,} / {denominator:,}"


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def group_table(frame: pd.DataFrame, title: str, limit: int | None = None) -> Table:
    """A per-class or per-slice frame as a table, worst (most negative flips) first."""
    table = Table(title=title)
    index_names = [name or "group" for name in frame.index.names]
    for name in index_names:
        table.add_column(name)
    for column in ("support", "acc old", "acc new", "NF", "PF", "NFR", "BTC"):
        table.add_column(column, justify="right")
    ordered = frame.sort_values("negative_flips", ascending=False, kind="stable")
    shown = ordered if limit is None else ordered.head(limit)
    for key, row in shown.iterrows():
        keys = key if isinstance(key, tuple) else (key,)
        table.add_row(
            *(Text(str(k)) for k in keys),
            f"{int(row['support']):,}",
            percent(row["accuracy_old"], 1),
            percent(row["accuracy_new"], 1),
            f"{int(row['negative_flips']):,}",
            f"{int(row['positive_flips']):,}",
            percent(row["negative_flip_rate"], 2),
            percent(row["backward_trust_compatibility"], 1),
        )
    if limit is not None and len(ordered) > limit:
        table.caption = f"{len(ordered) - limit} more not shown"
    return table


def regressions_table(frame: pd.DataFrame, title: str = "Biggest regressions") -> Table:
    """Negative flips (from :meth:`Comparison.top_regressions`) as a table."""
    table = Table(title=title)
    named = "label_name" in frame
    for column in ("id", "label", "old answer", "new answer"):
        table.add_column(column)
    if "new_confidence" in frame:
        table.add_column("new confidence", justify="right")
    for _, row in frame.iterrows():
        cells: list[Text | str] = [
            Text(str(row["id"])),
            Text(str(row["label_name"] if named else row["label"])),
            Text(str(row["old_pred_name"] if named else row["old_pred"])),
            Text(str(row["new_pred_name"] if named else row["new_pred"])),
        ]
        if "new_confidence" in frame:
            cells.append(f"{row['new_confidence']:.3f}")
        table.add_row(*cells)
    return table
