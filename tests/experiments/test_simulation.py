"""The simulator, and the A/A validation: false positives at alpha, CUPED's reduction."""

from __future__ import annotations

import numpy as np

from recsys.experiments.simulate import SimulationConfig, simulate_tables, simulate_users
from recsys.experiments.validation import aa_study


def test_the_simulator_is_seeded_and_its_populations_match_the_config() -> None:
    config = SimulationConfig(units=50_000)
    a, b = simulate_users(config, 2, 7), simulate_users(config, 2, 7)
    assert np.array_equal(a.clicks, b.clicks) and np.array_equal(a.dwell, b.dwell)
    assert not np.array_equal(a.clicks, simulate_users(config, 2, 8).clicks)
    ctr = a.clicks.sum() / a.impressions.sum()
    assert abs(ctr - config.ctr_a / (config.ctr_a + config.ctr_b)) < 0.002
    assert abs(a.impressions.mean() - config.impressions_mean) < 0.3
    # negative binomial: over-dispersed against a Poisson of the same mean
    assert a.impressions.var() > 5 * a.impressions.mean()
    # heavy users stay heavy: the periods correlate
    assert np.corrcoef(a.impressions.ravel(), a.pre["impressions"].ravel())[0, 1] > 0.5
    # only clicks and impressions when outcomes are not asked: the same draws
    fast = simulate_users(config, 2, 7, outcomes=False)
    assert np.array_equal(fast.clicks, a.clicks) and fast.dwell.sum() == 0


def test_the_tables_hold_the_simulated_users_totals() -> None:
    config = SimulationConfig(units=5_000, lift=0.1)
    exposures, pre = simulate_tables(config, seed=3)
    users = simulate_users(config, 1, 3)
    assert exposures["clicks"].sum() == users.clicks.sum()
    assert exposures["impressions"].sum() == users.impressions.sum()
    assert (exposures["conversions"] <= exposures["clicks"]).all()
    assert exposures["unit"].nunique() == users.observed.sum()
    assert exposures["timestamp"].is_monotonic_increasing
    assert set(exposures["arm"]) == {"control", "treatment"}
    assert pre["impressions"].sum() == users.pre["impressions"].sum()


def test_aa_false_positive_rate_is_alpha_over_500_experiments() -> None:
    r = aa_study(SimulationConfig(units=4_000), experiments=600, seed=61)
    for metric in ("ctr", "conversion", "dwell"):
        assert 0.03 <= r[f"fpr_{metric}"] <= 0.07, (metric, r)
        assert 0.03 <= r[f"fpr_{metric}_cuped"] <= 0.07, (metric, r)
    assert r["variance_reduction_ctr"] >= 0.20
    assert r["variance_reduction_dwell"] >= 0.20
