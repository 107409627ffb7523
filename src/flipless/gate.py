"""Release gates: rules on a :class:`Comparison` that a CI job can fail on.

Each rule compares one number with a limit and yields a :class:`Check`; the :class:`Verdict`
passes when every check holds. Rules:

* ``max_nfr``: NFR ≤ limit.
* ``max_class_nfr``: for every true class, #NF in the class / #class ≤ limit.
* ``max_slice_nfr``: for every group of every slice column with at least ``min_slice_size``
  samples, #NF in the group / #group ≤ limit (smaller groups are reported as skipped).
* ``min_accuracy_gain``: accuracy_new − accuracy_old ≥ limit (a negative limit tolerates a loss).
* ``significance``: the update is not a significant regression: fails when McNemar's test
  rejects equal accuracy at this level *and* the new model has more negative than positive flips.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from flipless.errors import InputError
from flipless.metrics.comparison import Comparison
from flipless.metrics.display import percent


@dataclass(frozen=True)
class Check:
    """One rule applied to one scope (the dataset, a class, or a slice group)."""

    rule: str
    scope: str
    value: float
    limit: float
    passed: bool
    detail: str


@dataclass(frozen=True)
class Verdict:
    """The outcome of all checks; ``skipped`` names slice groups too small to judge."""

    checks: list[Check]
    skipped: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def violations(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "violations": [asdict(c) for c in self.violations],
            "checks": [asdict(c) for c in self.checks],
            "skipped": self.skipped,
        }


def _fraction(value: float | None, name: str) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise InputError(
            f"{name}={value!r} (--{name.replace('_', '-')}); expected a fraction in [0, 1] "
            "(0.02 means 2 %)."
        )
    return value


def _rate_check(rule: str, scope: str, negative: int, total: int, limit: float) -> Check:
    value = negative / total if total else math.nan
    passed = math.isnan(value) or value <= limit
    detail = (
        f"NFR {percent(value)} {'≤' if passed else '>'} max {percent(limit)} "
        f"({negative:,} of {total:,} samples)"
    )
    return Check(rule, scope, value, limit, passed, detail)


def evaluate_gate(
    comparison: Comparison,
    *,
    max_nfr: float | None = None,
    max_class_nfr: float | None = None,
    max_slice_nfr: float | None = None,
    min_slice_size: int = 1,
    min_accuracy_gain: float | None = None,
    significance: float | None = None,
) -> Verdict:
    """Apply the rules that are set (see the module docstring)."""
    _fraction(max_nfr, "max_nfr")
    _fraction(max_class_nfr, "max_class_nfr")
    _fraction(max_slice_nfr, "max_slice_nfr")
    if significance is not None and not 0.0 < significance < 1.0:
        raise InputError(
            f"significance={significance!r} (--significance); expected a level strictly "
            "between 0 and 1, e.g. 0.05."
        )
    if min_accuracy_gain is not None and not -1.0 <= min_accuracy_gain <= 1.0:
        raise InputError(
            f"min_accuracy_gain={min_accuracy_gain!r} (--min-accuracy-gain); expected a "
            "difference of accuracies in [-1, 1]."
        )
    if (
        isinstance(min_slice_size, bool)
        or not isinstance(min_slice_size, int)
        or min_slice_size < 1
    ):
        raise InputError(
            f"min_slice_size={min_slice_size!r} (--min-slice-size); expected a whole number of "
            "samples ≥ 1."
        )
    if max_slice_nfr is not None and not comparison.slices:
        raise InputError(
            "max_slice_nfr (--max-slice-nfr) needs slice columns; name them with --slice COL "
            "(or slices= in compare())."
        )
    rules = (max_nfr, max_class_nfr, max_slice_nfr, min_accuracy_gain, significance)
    if all(rule is None for rule in rules):
        raise InputError(
            "No gate rule given; expected at least one of --max-nfr, --max-class-nfr, "
            "--max-slice-nfr, --min-accuracy-gain, --significance."
        )
    counts = comparison.counts
    checks: list[Check] = []
    skipped: list[str] = []
    if max_nfr is not None:
        checks.append(_rate_check("max_nfr", "all", counts.negative_flips, counts.total, max_nfr))
    if max_class_nfr is not None:
        frame = comparison.per_class()
        for name, row in frame.iterrows():
            checks.append(
                _rate_check(
                    "max_class_nfr",
                    f"class {name}",
                    int(row["negative_flips"]),
                    int(row["support"]),
                    max_class_nfr,
                )
            )
    if max_slice_nfr is not None:
        for (slice_name, group), row in comparison.per_slice().iterrows():
            scope = f"slice {slice_name}={group}"
            if row["support"] < min_slice_size:
                skipped.append(f"{scope} ({int(row['support'])} samples < {min_slice_size})")
                continue
            checks.append(
                _rate_check(
                    "max_slice_nfr",
                    scope,
                    int(row["negative_flips"]),
                    int(row["support"]),
                    max_slice_nfr,
                )
            )
    if min_accuracy_gain is not None:
        gain = counts.accuracy_delta
        passed = gain >= min_accuracy_gain
        checks.append(
            Check(
                "min_accuracy_gain",
                "all",
                gain,
                min_accuracy_gain,
                passed,
                f"accuracy gain {100 * gain:+.2f} pp {'≥' if passed else '<'} required "
                f"{100 * min_accuracy_gain:+.2f} pp",
            )
        )
    if significance is not None:
        test = comparison.significance.mcnemar
        worse = test.negative_flips > test.positive_flips and test.p_value < significance
        checks.append(
            Check(
                "significance",
                "all",
                test.p_value,
                significance,
                not worse,
                f"McNemar p={test.p_value:.3g} ({test.negative_flips:,} broken vs "
                f"{test.positive_flips:,} fixed): "
                + ("a significant regression" if worse else "no significant regression")
                + f" at level {significance:g}",
            )
        )
    return Verdict(checks, skipped)
