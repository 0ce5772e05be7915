"""The mSPRT: its mixture likelihood ratio and confidence sequence against numerical
integration and root finding in scipy, and its behaviour under continuous monitoring."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from recsys.experiments.sequential import mixture_log_lr, msprt
from recsys.experiments.simulate import SimulationConfig
from recsys.experiments.validation import sequential_study


@pytest.mark.parametrize(("diff", "var", "tau"), [(0.002, 1e-6, 0.0025), (-0.3, 0.04, 0.5),
                                                  (0.0, 1e-4, 0.01)])  # fmt: skip
def test_the_mixture_ratio_is_the_integral_over_the_normal_prior(
    diff: float, var: float, tau: float
) -> None:
    sd = np.sqrt(var)

    def integrand(d: float) -> float:
        ratio = stats.norm.pdf(diff, d, sd) / stats.norm.pdf(diff, 0.0, sd)
        return float(ratio * stats.norm.pdf(d, 0.0, tau))

    value, _ = integrate.quad(integrand, -12 * tau, 12 * tau, points=[diff], limit=200)
    got = float(np.exp(mixture_log_lr(np.array(diff), np.array(var), tau)))
    assert got == pytest.approx(value, rel=1e-6)


def test_the_confidence_sequence_is_where_the_ratio_reaches_one_over_alpha() -> None:
    diff, var, tau, alpha = 0.0015, 4e-7, 0.0025, 0.05
    r = msprt(np.array([diff]), np.array([var]), tau, alpha)

    def excess(d0: float) -> float:  # log Lambda of H0: d = d0, minus log(1 / alpha)
        return float(mixture_log_lr(np.array(diff - d0), np.array(var), tau)) - np.log(1 / alpha)

    upper = optimize.brentq(excess, diff, diff + 100 * np.sqrt(var))
    lower = optimize.brentq(excess, diff - 100 * np.sqrt(var), diff)
    assert (float(r.lower[0]), float(r.upper[0])) == pytest.approx((lower, upper), rel=1e-9)
    # the p-value is below alpha exactly when 0 is outside the sequence
    assert (float(r.p_values[0]) < alpha) == (not lower <= 0 <= upper)


def test_p_values_never_increase_and_the_sequence_only_narrows() -> None:
    rng = np.random.default_rng(4)
    n = np.arange(1, 41) * 500
    diff = rng.normal(0, 1 / np.sqrt(n))
    r = msprt(diff, 1 / n, tau=0.05)
    assert np.all(np.diff(r.p_values) <= 0)
    assert np.all(np.diff(r.lower) >= 0) and np.all(np.diff(r.upper) <= 0)
    # a look without information (no variance yet) is p = 1 with an unbounded sequence
    blank = msprt(np.array([np.nan, 0.1]), np.array([np.nan, 1e-3]), tau=0.05)
    assert blank.p_values[0] == 1.0 and np.isinf(blank.upper[0]) and np.isfinite(blank.upper[1])


def test_under_aa_with_continuous_monitoring_false_positives_stay_below_alpha() -> None:
    config = SimulationConfig(units=20_000)
    r = sequential_study(config, experiments=400, seed=31, looks=50)
    se = np.sqrt(0.05 * 0.95 / 400)
    assert r["rejection_rate"] <= 0.05 + se  # always valid: at most alpha (plus noise)
    assert r["cs_coverage"] >= 0.95 - se
    # the same data read with a fixed-horizon test at every look rejects far too often
    assert r["peeking_rejection_rate"] > 0.15
    assert 0.03 <= r["fixed_horizon_rejection_rate"] <= 0.08


def test_under_a_true_lift_it_stops_early_and_covers_the_lift() -> None:
    # twice the traffic a fixed-horizon test needs for 80% power at a 3% CTR lift
    config = replace(SimulationConfig(units=160_000), lift=0.03)
    r = sequential_study(config, experiments=60, seed=32, looks=40)
    assert r["rejection_rate"] >= 0.7
    assert r["mean_stop_fraction"] < 0.75  # it stops well before the end, on average
    assert r["cs_coverage"] >= 0.9
