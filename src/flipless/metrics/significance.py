"""Is the update's change real? McNemar's test and bootstrap confidence intervals.

McNemar's test (McNemar, Psychometrika 1947) compares the discordant pairs: b = #negative
flips, c = #positive flips. Under "old and new are equally accurate", b ~ Binomial(b + c, ½).

* exact:  p = min(1, 2 · P[Binomial(b + c, ½) ≤ min(b, c)])
* chi2:   χ² = max(|b − c| − 1, 0)² / (b + c) (Edwards' continuity correction), 1 d.o.f.
* auto:   exact when b + c < 25, chi2 otherwise.

The bootstrap resamples N samples with replacement. Every rate here depends on a sample only
through its outcome code, so resampling samples is the same as drawing the counts of the 8
codes from Multinomial(N, counts / N): exact, and independent of N in cost. Intervals are
percentile intervals (Efron & Tibshirani 1993) from a seeded ``numpy`` generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from flipless.errors import InputError
from flipless.metrics.counts import FlipCounts
from flipless.validation import check_probability

EXACT_BELOW = 25

#: Statistics that get a bootstrap interval.
BOOTSTRAPPED = (
    "negative_flip_rate",
    "accuracy_delta",
    "positive_flip_rate",
    "relative_negative_flip_rate",
    "backward_trust_compatibility",
    "backward_error_compatibility",
)


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test on the negative (b) and positive (c) flips."""

    negative_flips: int
    positive_flips: int
    statistic: float
    p_value: float
    method: str


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided percentile interval at level ``confidence``."""

    estimate: float
    low: float
    high: float
    confidence: float


@dataclass(frozen=True)
class Significance:
    """McNemar's test plus bootstrap intervals, with the settings that produced them."""

    mcnemar: McNemarResult
    intervals: dict[str, Interval]
    n_resamples: int
    seed: int


def mcnemar(counts: FlipCounts, method: str = "auto") -> McNemarResult:
    """McNemar's test of equal accuracy from the flip counts (see the module docstring)."""
    if method not in ("auto", "exact", "chi2"):
        raise InputError(f"method={method!r}; expected 'auto', 'exact' or 'chi2'.")
    b, c = counts.negative_flips, counts.positive_flips
    discordant = b + c
    if discordant == 0:
        return McNemarResult(b, c, 0.0, 1.0, "exact" if method == "auto" else method)
    if method == "exact" or (method == "auto" and discordant < EXACT_BELOW):
        p_value = min(1.0, 2.0 * float(stats.binom.cdf(min(b, c), discordant, 0.5)))
        return McNemarResult(b, c, float(min(b, c)), p_value, "exact")
    statistic = max(abs(b - c) - 1, 0) ** 2 / discordant
    return McNemarResult(b, c, statistic, float(stats.chi2.sf(statistic, 1)), "chi2")


def _statistic(counts: FlipCounts, name: str) -> float:
    if name == "accuracy_delta":
        return counts.accuracy_delta
    return counts.rate(name).value


def bootstrap_intervals(
    outcomes: np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Interval]:
    """Percentile intervals for :data:`BOOTSTRAPPED` from the 8 outcome-code counts."""
    check_probability(confidence, "confidence")
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise InputError(f"n_resamples={n_resamples!r}; expected a positive integer.")
    outcomes = np.asarray(outcomes, dtype=np.int64)
    observed = FlipCounts.from_outcomes(outcomes)
    if observed.total == 0:
        raise InputError("No samples to bootstrap; expected at least one.")
    draws = np.random.default_rng(seed).multinomial(
        observed.total, outcomes / observed.total, size=int(n_resamples)
    )
    resampled = [FlipCounts.from_outcomes(draw) for draw in draws]
    tail = 100.0 * (1.0 - confidence) / 2.0
    intervals = {}
    for name in BOOTSTRAPPED:
        values = np.array([_statistic(counts, name) for counts in resampled])
        values = values[~np.isnan(values)]
        if values.size == 0:
            low = high = math.nan
        else:
            low, high = (float(v) for v in np.percentile(values, [tail, 100.0 - tail]))
        intervals[name] = Interval(_statistic(observed, name), low, high, confidence)
    return intervals


def significance(
    outcomes: np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    method: str = "auto",
) -> Significance:
    """McNemar's test and bootstrap intervals from the 8 outcome-code counts."""
    return Significance(
        mcnemar=mcnemar(FlipCounts.from_outcomes(outcomes), method),
        intervals=bootstrap_intervals(outcomes, confidence, n_resamples, seed),
        n_resamples=int(n_resamples),
        seed=int(seed),
    )
