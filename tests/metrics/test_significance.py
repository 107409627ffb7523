"""McNemar's test against hand computations, and the bootstrap against a naive resampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from flipless.errors import FliplessError
from flipless.metrics.comparison import compare
from flipless.metrics.counts import FlipCounts
from flipless.metrics.significance import bootstrap_intervals, mcnemar

BOOTSTRAPPED = (
    "negative_flip_rate",
    "accuracy_delta",
    "positive_flip_rate",
    "relative_negative_flip_rate",
    "backward_trust_compatibility",
    "backward_error_compatibility",
)


def _counts(negative: int, positive: int, both_correct: int = 50, both_wrong: int = 10):
    return FlipCounts(
        total=both_correct + negative + positive + both_wrong,
        both_correct=both_correct,
        negative_flips=negative,
        positive_flips=positive,
        both_wrong_same=both_wrong,
        both_wrong_different=0,
    )


def _outcomes(both_correct: int, negative: int, positive: int, same: int, different: int):
    """The 8 outcome-code counts (bit 0 old correct, bit 1 new correct, bit 2 same answer)."""
    table = np.zeros(8, dtype=np.int64)
    table[0b111] = both_correct
    table[0b001] = negative
    table[0b010] = positive
    table[0b100] = same
    table[0b000] = different
    return table


def _exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: 2 P[Binomial(b + c, 1/2) <= min(b, c)], capped at 1."""
    n = b + c
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


# McNemar -----------------------------------------------------------------------------------


def test_mcnemar_exact_hand_value():
    # b = 1, c = 6: P[X <= 1] = (C(7,0) + C(7,1)) / 2^7 = 8 / 128; p = 2 * 8 / 128 = 0.125
    result = mcnemar(_counts(1, 6))
    assert result.method == "exact"
    assert result.p_value == pytest.approx(0.125, rel=1e-12)
    assert (result.negative_flips, result.positive_flips) == (1, 6)


def test_mcnemar_exact_is_symmetric():
    assert mcnemar(_counts(6, 1)).p_value == pytest.approx(0.125, rel=1e-12)


def test_mcnemar_exact_one_sided_extreme():
    # b = 0, c = 5: p = 2 / 2^5 = 0.0625
    assert mcnemar(_counts(0, 5)).p_value == pytest.approx(0.0625, rel=1e-12)


def test_mcnemar_exact_is_capped_at_one():
    # b = c = 3: 2 * (1 + 6 + 15 + 20) / 64 = 1.3125 -> 1
    assert mcnemar(_counts(3, 3)).p_value == 1.0


@pytest.mark.parametrize(("b", "c"), [(0, 1), (2, 9), (7, 17), (11, 13), (12, 0)])
def test_mcnemar_exact_below_25_discordant_pairs(b, c):
    result = mcnemar(_counts(b, c))
    assert result.method == "exact"
    assert result.p_value == pytest.approx(_exact_p(b, c), rel=1e-10)


@pytest.mark.parametrize(("b", "c"), [(10, 20), (5, 20), (40, 25), (100, 130), (30, 0)])
def test_mcnemar_chi2_from_25_discordant_pairs(b, c):
    result = mcnemar(_counts(b, c))
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    assert result.method == "chi2"
    assert result.statistic == pytest.approx(statistic, rel=1e-12)
    assert result.p_value == pytest.approx(stats.chi2.sf(statistic, 1), rel=1e-10)
    # chi2 with one degree of freedom: sf(x) = erfc(sqrt(x / 2))
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(statistic / 2)), rel=1e-9)


def test_mcnemar_chi2_hand_value():
    # b = 10, c = 20: (|10 - 20| - 1)^2 / 30 = 81 / 30 = 2.7
    result = mcnemar(_counts(10, 20))
    assert result.statistic == pytest.approx(2.7)
    assert result.p_value == pytest.approx(0.10034, abs=1e-5)


def test_mcnemar_chi2_continuity_correction_floors_at_zero():
    # b = 12, c = 13: |b - c| - 1 = 0 -> statistic 0, p = 1
    result = mcnemar(_counts(12, 13))
    assert result.method == "chi2"
    assert result.statistic == 0.0
    assert result.p_value == pytest.approx(1.0)


def test_mcnemar_without_discordant_pairs():
    result = mcnemar(_counts(0, 0))
    assert result.p_value == 1.0


def test_mcnemar_forced_methods():
    assert mcnemar(_counts(10, 20), method="exact").p_value == pytest.approx(_exact_p(10, 20))
    forced = mcnemar(_counts(1, 6), method="chi2")
    assert forced.method == "chi2"
    assert forced.statistic == pytest.approx(16 / 7)  # (|1 - 6| - 1)^2 / 7
    assert forced.p_value == pytest.approx(stats.chi2.sf(16 / 7, 1))


def test_mcnemar_rejects_an_unknown_method():
    with pytest.raises(FliplessError, match="method='fisher'"):
        mcnemar(_counts(1, 1), method="fisher")


def test_comparison_significance_runs_mcnemar_on_its_flips():
    # 2 negative flips, 9 positive flips, 5 both correct, 4 both wrong
    labels = [0] * 20
    old = [0, 0] + [1] * 9 + [0] * 5 + [1] * 4
    new = [1, 1] + [0] * 9 + [0] * 5 + [1] * 4
    significance = compare(old, new, labels, num_classes=2).significance
    assert significance.mcnemar.negative_flips == 2
    assert significance.mcnemar.positive_flips == 9
    assert significance.mcnemar.p_value == pytest.approx(_exact_p(2, 9), rel=1e-10)


# Bootstrap ---------------------------------------------------------------------------------

# 1000 samples: 850 both correct, 40 negative flips, 60 positive flips, 30 + 20 both wrong
OUTCOMES = _outcomes(850, 40, 60, 30, 20)


def test_bootstrap_estimates_are_the_observed_rates():
    intervals = bootstrap_intervals(OUTCOMES, n_resamples=200, seed=0)
    assert set(intervals) == set(BOOTSTRAPPED)
    # hand values: NFR 40/1000, delta (60 - 40)/1000, PFR 60/1000, BTC 850/890,
    # BEC 50/90 (both wrong / new wrong), relative NFR 0.04 / (0.89 * 0.09)
    assert intervals["negative_flip_rate"].estimate == pytest.approx(0.04)
    assert intervals["accuracy_delta"].estimate == pytest.approx(0.02)
    assert intervals["positive_flip_rate"].estimate == pytest.approx(0.06)
    assert intervals["backward_trust_compatibility"].estimate == pytest.approx(850 / 890)
    assert intervals["backward_error_compatibility"].estimate == pytest.approx(50 / 90)
    assert intervals["relative_negative_flip_rate"].estimate == pytest.approx(0.04 / (0.89 * 0.09))


@pytest.mark.parametrize("name", BOOTSTRAPPED)
def test_bootstrap_interval_contains_the_estimate(name):
    interval = bootstrap_intervals(OUTCOMES, n_resamples=2000, seed=3)[name]
    assert interval.low < interval.estimate < interval.high
    assert interval.confidence == 0.95


def test_bootstrap_is_seeded():
    first = bootstrap_intervals(OUTCOMES, n_resamples=500, seed=11)
    again = bootstrap_intervals(OUTCOMES, n_resamples=500, seed=11)
    other = bootstrap_intervals(OUTCOMES, n_resamples=500, seed=12)
    assert first == again
    assert any(
        (first[name].low, first[name].high) != (other[name].low, other[name].high)
        for name in BOOTSTRAPPED
    )
    assert first["negative_flip_rate"] != other["negative_flip_rate"]


def test_comparison_significance_is_seeded():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 500)
    old = np.where(rng.random(500) < 0.8, labels, rng.integers(0, 3, 500))
    new = np.where(rng.random(500) < 0.8, labels, rng.integers(0, 3, 500))
    a = compare(old, new, labels, seed=5, n_bootstrap=300).significance
    b = compare(old, new, labels, seed=5, n_bootstrap=300).significance
    c = compare(old, new, labels, seed=6, n_bootstrap=300).significance
    assert a == b
    assert a.intervals != c.intervals
    assert (a.seed, a.n_resamples) == (5, 300)


def test_bootstrap_width_halves_when_n_quadruples():
    small = bootstrap_intervals(_outcomes(1700, 100, 120, 50, 30), n_resamples=4000, seed=0)
    large = bootstrap_intervals(_outcomes(6800, 400, 480, 200, 120), n_resamples=4000, seed=0)
    for name in ("negative_flip_rate", "accuracy_delta", "backward_trust_compatibility"):
        width_small = small[name].high - small[name].low
        width_large = large[name].high - large[name].low
        assert 0.35 <= width_large / width_small <= 0.65, name


def test_bootstrap_higher_confidence_is_wider():
    narrow = bootstrap_intervals(OUTCOMES, confidence=0.8, n_resamples=2000, seed=0)
    wide = bootstrap_intervals(OUTCOMES, confidence=0.99, n_resamples=2000, seed=0)
    for name in BOOTSTRAPPED:
        assert wide[name].low <= narrow[name].low, name
        assert wide[name].high >= narrow[name].high, name
        assert wide[name].high - wide[name].low > narrow[name].high - narrow[name].low, name


def test_bootstrap_nfr_interval_near_the_normal_approximation():
    # NFR = 0.04 on 1000 samples: standard error sqrt(0.04 * 0.96 / 1000) = 0.0062
    interval = bootstrap_intervals(OUTCOMES, n_resamples=4000, seed=1)["negative_flip_rate"]
    half_width = 1.96 * math.sqrt(0.04 * 0.96 / 1000)
    assert interval.low == pytest.approx(0.04 - half_width, abs=0.002)
    assert interval.high == pytest.approx(0.04 + half_width, abs=0.002)


def test_multinomial_bootstrap_matches_naive_resampling():
    # N = 2000 samples with explicit per-sample outcomes; the naive bootstrap resamples rows
    n = 2000
    rng = np.random.default_rng(2024)
    labels = rng.integers(0, 4, n)
    old = np.where(rng.random(n) < 0.85, labels, (labels + 1) % 4)
    new = np.where(rng.random(n) < 0.88, labels, (labels + 2) % 4)
    old_ok, new_ok = old == labels, new == labels
    negative = old_ok & ~new_ok
    delta = new_ok.astype(np.int64) - old_ok.astype(np.int64)

    rows = np.random.default_rng(99).integers(0, n, size=(4000, n))
    naive_nfr = negative[rows].mean(axis=1)
    naive_delta = delta[rows].mean(axis=1)

    comparison = compare(old, new, labels, n_bootstrap=4000, seed=7)
    intervals = comparison.significance.intervals
    library = bootstrap_intervals(comparison.class_outcomes.sum(axis=0), n_resamples=4000, seed=7)
    assert library == intervals
    nfr_low, nfr_high = np.percentile(naive_nfr, [2.5, 97.5])
    assert intervals["negative_flip_rate"].estimate == pytest.approx(negative.mean())
    assert intervals["negative_flip_rate"].low == pytest.approx(nfr_low, abs=0.004)
    assert intervals["negative_flip_rate"].high == pytest.approx(nfr_high, abs=0.004)
    delta_low, delta_high = np.percentile(naive_delta, [2.5, 97.5])
    assert intervals["accuracy_delta"].low == pytest.approx(delta_low, abs=0.004)
    assert intervals["accuracy_delta"].high == pytest.approx(delta_high, abs=0.004)


def test_bootstrap_of_an_always_undefined_rate_is_nan():
    # the new model makes no errors: BEC is NaN in every resample
    interval = bootstrap_intervals(_outcomes(90, 0, 10, 0, 0), n_resamples=100)[
        "backward_error_compatibility"
    ]
    assert math.isnan(interval.estimate)
    assert math.isnan(interval.low) and math.isnan(interval.high)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.2])
def test_bootstrap_rejects_a_bad_confidence(confidence):
    with pytest.raises(FliplessError, match="strictly between 0 and 1"):
        bootstrap_intervals(OUTCOMES, confidence=confidence)


@pytest.mark.parametrize("n_resamples", [0, -5, 2.5])
def test_bootstrap_rejects_a_bad_resample_count(n_resamples):
    with pytest.raises(FliplessError, match="n_resamples"):
        bootstrap_intervals(OUTCOMES, n_resamples=n_resamples)


def test_bootstrap_without_samples():
    with pytest.raises(FliplessError, match="No samples"):
        bootstrap_intervals(np.zeros(8, dtype=np.int64))
