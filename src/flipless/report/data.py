"""One :class:`~flipless.metrics.comparison.Comparison` → the JSON-able views the report shows.

Every number is computed here, from the comparison's counts; the page only displays and
filters. The views:

* ``summary``: accuracy old / new, the accuracy change, NFR, PFR, NFI, relative NFR, BTC and
  BEC, each with its counts and an interval, and McNemar's test. Intervals are the
  comparison's bootstrap intervals (:mod:`flipless.metrics.significance`) where it has one;
  the accuracies and NFI, which it does not bootstrap, get the Wilson score interval of a
  binomial proportion (Wilson, JASA 1927): accuracies over the N samples, NFI over the new
  model's errors.
* ``venn``: the area-proportional diagram of errors (:mod:`flipless.report.venn`).
* ``classes``: per true class, negative flips and their share of all negative flips,
  positive flips, support, and accuracy old / new.
* ``slices``: the same per group of each slice column; a group can filter the table when a
  metadata column of the same name reproduces the slice's counts row by row.
* ``flip_matrix``: negative flips by (old answer, new answer).
* ``instances``: per-row arrays (row, label, old / new answer and confidence, outcome code).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from flipless.metrics.comparison import Comparison
from flipless.metrics.counts import RATE_LABELS
from flipless.metrics.outcomes import NEW_CORRECT, OLD_CORRECT, group_outcomes
from flipless.report.dataset import display_value
from flipless.report.venn import venn_layout

#: Summary rows: (key, label, unit). Units: percent, points (percentage points), ratio.
SUMMARY_ROWS = (
    ("accuracy_old", RATE_LABELS["accuracy_old"], "percent"),
    ("accuracy_new", RATE_LABELS["accuracy_new"], "percent"),
    ("accuracy_delta", "accuracy change", "points"),
    ("negative_flip_rate", RATE_LABELS["negative_flip_rate"], "percent"),
    ("positive_flip_rate", RATE_LABELS["positive_flip_rate"], "percent"),
    ("negative_flip_impact", RATE_LABELS["negative_flip_impact"], "percent"),
    ("relative_negative_flip_rate", RATE_LABELS["relative_negative_flip_rate"], "ratio"),
    ("backward_trust_compatibility", RATE_LABELS["backward_trust_compatibility"], "percent"),
    ("backward_error_compatibility", RATE_LABELS["backward_error_compatibility"], "percent"),
)
#: Rates without a bootstrap interval in the comparison: Wilson interval over this count.
WILSON_DENOMINATOR = {
    "accuracy_old": "total",
    "accuracy_new": "total",
    "negative_flip_impact": "new_wrong",
}
#: Confidences are shown with 3 decimals; 4 are kept.
CONFIDENCE_DECIMALS = 4


def number(value: float | None) -> float | None:
    """A float for JSON: NaN becomes None."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def format_value(value: float | None, unit: str) -> str:
    """``percent``: 3.25 %, ``points``: +1.20 pp, ``ratio``: 0.512; NaN / None: n/a."""
    if value is None or math.isnan(value):
        return "n/a"
    if unit == "percent":
        return f"{100 * value:.2f} %"
    if unit == "points":
        return f"{100 * value:+.2f} pp"
    return f"{value:.3f}"


def format_interval(low: float | None, high: float | None, unit: str) -> str:
    """``[2.10, 4.05] %`` (``pp`` for points, bare for ratios); empty when undefined."""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return ""
    if unit == "ratio":
        return f"[{low:.3f}, {high:.3f}]"
    suffix = " %" if unit == "percent" else " pp"
    return f"[{100 * low:.2f}, {100 * high:.2f}]{suffix}"


def wilson_interval(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """The Wilson score interval of successes / trials; (NaN, NaN) without trials."""
    if trials == 0:
        return math.nan, math.nan
    found = stats.binomtest(successes, trials).proportion_ci(confidence, method="wilson")
    return float(found.low), float(found.high)


def summary(comparison: Comparison) -> dict[str, Any]:
    """Summary rows (value, interval, counts, all as numbers and display text) and McNemar."""
    counts = comparison.counts
    significance = comparison.significance
    bootstrap = f"bootstrap, {significance.n_resamples} resamples, seed {significance.seed}"
    rows = []
    for key, label, unit in SUMMARY_ROWS:
        if key == "accuracy_delta":
            value, reason = counts.accuracy_delta, None
            detail = f"{counts.positive_flips:,} fixed − {counts.negative_flips:,} broken"
        else:
            rate = counts.rate(key)
            value, reason = rate.value, rate.reason
            detail = f"{rate.numerator:,} / {rate.denominator:,}"
            if key == "relative_negative_flip_rate":
                detail = "NFR / (acc old · (1 − acc new))"
        if key in significance.intervals:
            interval = significance.intervals[key]
            low, high, method = interval.low, interval.high, bootstrap
        else:
            trials = getattr(counts, WILSON_DENOMINATOR[key])
            successes = counts.rate(key).numerator
            low, high = wilson_interval(successes, trials, comparison.confidence)
            method = "Wilson score"
        rows.append(
            {
                "key": key,
                "label": label,
                "unit": unit,
                "value": number(value),
                "display": format_value(value, unit),
                "low": number(low),
                "high": number(high),
                "interval": format_interval(low, high, unit),
                "interval_method": method,
                "counts": reason or detail,
            }
        )
    test = significance.mcnemar
    return {
        "confidence": comparison.confidence,
        "rows": rows,
        "mcnemar": {
            "p_value": test.p_value,
            "display": f"{test.p_value:.3g}",
            "method": test.method,
            "statistic": test.statistic,
            "negative_flips": test.negative_flips,
            "positive_flips": test.positive_flips,
        },
    }


def venn(comparison: Comparison) -> dict[str, Any]:
    """Counts of the three error regions and their diagram's layout."""
    counts = comparison.counts
    return {
        "old_errors": counts.old_wrong,
        "new_errors": counts.new_wrong,
        "progress": counts.positive_flips,
        "regress": counts.negative_flips,
        "common": counts.both_wrong,
        "common_same": counts.both_wrong_same,
        "common_different": counts.both_wrong_different,
        "layout": venn_layout(counts.old_wrong, counts.new_wrong, counts.both_wrong).to_dict(),
    }


def _group_rows(frame: Any, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for key, (_, row) in zip(keys, frame.iterrows(), strict=True):
        rows.append(
            key
            | {
                "support": int(row["support"]),
                "negative_flips": int(row["negative_flips"]),
                "positive_flips": int(row["positive_flips"]),
                "share_of_negative_flips": number(row["share_of_negative_flips"]),
                "accuracy_old": number(row["accuracy_old"]),
                "accuracy_new": number(row["accuracy_new"]),
                "negative_flip_rate": number(row["negative_flip_rate"]),
            }
        )
    return rows


def classes(comparison: Comparison) -> list[dict[str, Any]]:
    """Per true class: index, name and the counts and rates of :meth:`Comparison.per_class`."""
    keys = [{"index": k, "name": comparison.class_label(k)} for k in range(comparison.num_classes)]
    return _group_rows(comparison.per_class(), keys)


def slice_filter_column(comparison: Comparison, name: str, metadata: dict[str, list[str]]) -> bool:
    """Whether metadata column ``name`` gives each row its group in slice ``name``.

    True when the column exists, every value is one of the slice's groups (as display
    strings), and counting the comparison's outcome codes per group reproduces the slice's
    stored counts exactly.
    """
    instances = comparison.instances
    if instances is None or name not in metadata:
        return False
    table = comparison.slices[name]
    positions = {display_value(group): g for g, group in enumerate(table.groups)}
    group_index = np.array([positions.get(value, -1) for value in metadata[name]])
    if group_index.shape[0] != instances.codes.shape[0] or (group_index < 0).any():
        return False
    found = group_outcomes(instances.codes, group_index, len(table.groups))
    return bool(np.array_equal(found, table.outcomes))


def slices(comparison: Comparison, metadata: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Per slice column: its groups' counts and whether clicking a group filters the table."""
    views = []
    for name, table in comparison.slices.items():
        keys = [{"key": display_value(group)} for group in table.groups]
        views.append(
            {
                "name": name,
                "filterable": slice_filter_column(comparison, name, metadata),
                "groups": _group_rows(comparison.per_slice(name), keys),
            }
        )
    return views


#: Order in which rows are kept when a comparison's instances are capped.
_KEEP_PRIORITY = np.array([2, 0, 1, 3])  # by code & 3: both wrong, NF, PF, both right


def kept_rows(codes: np.ndarray, limit: int | None) -> np.ndarray:
    """Rows embedded in the report, in input order: all of them, or ``limit`` chosen in turn
    among negative flips, positive flips, both wrong and both right (input order within each).
    """
    if limit is None or limit >= codes.shape[0]:
        return np.arange(codes.shape[0])
    priority = _KEEP_PRIORITY[codes & (OLD_CORRECT | NEW_CORRECT)]
    order = np.argsort(priority, kind="stable")[:limit]
    return np.sort(order)


def _rounded(values: np.ndarray | None, rows: np.ndarray) -> list[float | None] | None:
    if values is None:
        return None
    kept = np.round(values[rows].astype(np.float64), CONFIDENCE_DECIMALS)
    return [None if math.isnan(v) else v for v in kept.tolist()]


def instances(comparison: Comparison, limit: int | None) -> dict[str, Any] | None:
    """Per-row arrays of the kept rows (see :func:`kept_rows`); None for a counts-only comparison.

    ``row`` indexes the report's shared per-row data (ids, texts, metadata, thumbnails);
    ``code`` is the 3-bit outcome code of :mod:`flipless.metrics.outcomes`.
    """
    kept = comparison.instances
    if kept is None:
        return None
    rows = kept_rows(kept.codes, limit)
    return {
        "total": int(kept.codes.shape[0]),
        "embedded": int(rows.shape[0]),
        "row": rows.tolist(),
        "label": kept.labels[rows].tolist(),
        "old": kept.old_pred[rows].tolist(),
        "new": kept.new_pred[rows].tolist(),
        "code": kept.codes[rows].tolist(),
        "old_confidence": _rounded(kept.old_confidence, rows),
        "new_confidence": _rounded(kept.new_confidence, rows),
    }


def comparison_payload(
    comparison: Comparison,
    label: str,
    metadata: dict[str, list[str]],
    max_instances: int | None,
) -> dict[str, Any]:
    """Every view of one comparison (see the module docstring)."""
    return {
        "label": label,
        "top_k": comparison.top_k,
        "class_names": [comparison.class_label(k) for k in range(comparison.num_classes)],
        "counts": comparison.counts.as_dict(),
        "summary": summary(comparison),
        "venn": venn(comparison),
        "classes": classes(comparison),
        "slices": slices(comparison, metadata),
        "flip_matrix": comparison.flip_matrix.tolist(),
        "instances": instances(comparison, max_instances),
    }
