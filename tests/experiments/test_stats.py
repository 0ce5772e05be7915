"""Fixed-horizon statistics, each checked against scipy, statsmodels or a large bootstrap
on the same data: Welch tests, delta-method ratio variance, relative lift, CUPED."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from recsys.experiments.metrics import METRICS
from recsys.experiments.moments import Moments
from recsys.experiments.simulate import SimulationConfig, simulate_users
from recsys.experiments.stats import compare, summarize


@pytest.fixture(scope="module")
def users() -> dict[str, np.ndarray]:
    """One simulated A/B experiment (3% CTR lift), as flat per-user arrays."""
    u = simulate_users(SimulationConfig(units=40_000, lift=0.03), 1, seed=2024)
    keep = u.observed[0]
    out = {k: v[0][keep].astype(np.float64) for k, v in u.columns().items()}
    out.update({f"pre_{k}": v[0][keep].astype(np.float64) for k, v in u.pre.items()})
    out["treatment"] = u.treatment[0][keep].astype(bool)
    return out


def arm_moments(users: dict[str, np.ndarray], metric: str) -> tuple[Moments, Moments]:
    y, x = METRICS[metric].unit_values(users)
    pre = {k[4:]: v for k, v in users.items() if k.startswith("pre_")}
    yp, xp = METRICS[metric].unit_values(pre)
    t = users["treatment"]
    return Moments.of(y, x, yp, xp, ~t), Moments.of(y, x, yp, xp, t)


def test_moments_add_up_and_give_numpy_means_and_covariances() -> None:
    rng = np.random.default_rng(0)
    y, x = rng.poisson(3, 500).astype(float), rng.poisson(20, 500).astype(float)
    whole = Moments.of(y, x, y * 0.5, x + 1)
    parts = Moments.of(y[:200], x[:200], y[:200] * 0.5, x[:200] + 1) + Moments.of(
        y[200:], x[200:], y[200:] * 0.5, x[200:] + 1
    )
    np.testing.assert_allclose(parts.cross, whole.cross)
    np.testing.assert_allclose(whole.mean, [y.mean(), x.mean(), 0.5 * y.mean(), x.mean() + 1])
    np.testing.assert_allclose(whole.cov, np.cov(np.stack([y, x, y * 0.5, x + 1])), rtol=1e-10)


@pytest.mark.parametrize("metric", ["dwell", "conversion"])
def test_mean_metrics_are_welch_t_tests(users: dict[str, np.ndarray], metric: str) -> None:
    c, t = arm_moments(users, metric)
    r = compare(c, t, alpha=0.05)
    y, _ = METRICS[metric].unit_values(users)
    yt, yc = y[users["treatment"]], y[~users["treatment"]]
    ref = stats.ttest_ind(yt, yc, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert float(r.diff) == pytest.approx(yt.mean() - yc.mean(), rel=1e-12)
    assert float(r.p_value) == pytest.approx(ref.pvalue, rel=1e-9)
    assert float(r.df) == pytest.approx(ref.df, rel=1e-9)
    assert (float(r.ci_low), float(r.ci_high)) == pytest.approx((ci.low, ci.high), rel=1e-9)
    # statsmodels agrees as well
    cm = CompareMeans(DescrStatsW(yt), DescrStatsW(yc))
    low, high = cm.tconfint_diff(alpha=0.05, usevar="unequal")
    assert (float(r.ci_low), float(r.ci_high)) == pytest.approx((low, high), rel=1e-9)


def test_ratio_variance_is_the_textbook_delta_method(users: dict[str, np.ndarray]) -> None:
    c, _ = arm_moments(users, "ctr")
    s = summarize(c)
    ctl = ~users["treatment"]
    y, x = users["clicks"][ctl], users["impressions"][ctl]
    my, mx = y.mean(), x.mean()
    cov = np.cov(y, x)
    textbook = cov[0, 0] / mx**2 - 2 * my * cov[0, 1] / mx**3 + my**2 * cov[1, 1] / mx**4
    assert float(s.mean) == pytest.approx(y.sum() / x.sum(), rel=1e-12)
    assert float(s.unit_var) == pytest.approx(textbook, rel=1e-10)
    # and the variance of the linearized values (y - R x) / mean(x)
    linear = (y - my / mx * x) / mx
    assert float(s.unit_var) == pytest.approx(linear.var(ddof=1), rel=1e-10)


def test_ratio_and_relative_lift_intervals_match_a_large_bootstrap(
    users: dict[str, np.ndarray],
) -> None:
    c, t = arm_moments(users, "ctr")
    r = compare(c, t)
    rng = np.random.default_rng(11)
    arms = [~users["treatment"], users["treatment"]]
    boot_diff, boot_rel = [], []
    for _ in range(10):  # 10 x 200 = 2000 Poisson-bootstrap replicates, in chunks
        ratios = []
        for arm in arms:
            y, x = users["clicks"][arm], users["impressions"][arm]
            w = rng.poisson(1.0, (200, len(y))).astype(np.float64)
            ratios.append((w @ y) / (w @ x))
        boot_diff.append(ratios[1] - ratios[0])
        boot_rel.append(ratios[1] / ratios[0] - 1)
    diff, rel = np.concatenate(boot_diff), np.concatenate(boot_rel)
    # 2000 replicates estimate an SE within about 3% (1 / sqrt(2 * 2000) ~ 1.6%)
    assert float(r.se) == pytest.approx(diff.std(ddof=1), rel=0.06)
    assert float(r.rel_se) == pytest.approx(rel.std(ddof=1), rel=0.06)
    low, high = np.quantile(diff, [0.025, 0.975])
    assert float(r.ci_low) == pytest.approx(low, abs=0.15 * float(r.se))
    assert float(r.ci_high) == pytest.approx(high, abs=0.15 * float(r.se))


def test_cuped_reduces_the_variance_by_the_squared_correlation(
    users: dict[str, np.ndarray],
) -> None:
    c, t = arm_moments(users, "ctr")
    plain, adjusted = compare(c, t), compare(c, t, cuped=True)
    # the squared correlation of the linearized metric with its pre-period, pooled
    # within arms, computed directly with numpy
    lin, lin_pre = [], []
    for arm in (~users["treatment"], users["treatment"]):
        y, x = users["clicks"][arm], users["impressions"][arm]
        yp, xp = users["pre_clicks"][arm], users["pre_impressions"][arm]
        lin.append((y - y.mean() / x.mean() * x) / x.mean())
        lin_pre.append((yp - yp.mean() / xp.mean() * xp) / xp.mean())
    rho = np.corrcoef(np.concatenate(lin), np.concatenate(lin_pre))[0, 1]
    assert float(adjusted.variance_reduction) == pytest.approx(rho**2, abs=0.01)
    assert float(adjusted.variance_reduction) >= 0.20  # the simulator's goal
    assert float(adjusted.se) ** 2 == pytest.approx(
        float(plain.se) ** 2 * (1 - float(adjusted.variance_reduction)), rel=1e-9
    )
    # the adjustment moves the estimate by theta times the pre-period difference only
    cs, ts = summarize(c), summarize(t)
    shift = float(adjusted.theta) * float(ts.pre_mean - cs.pre_mean)
    assert float(adjusted.diff) == pytest.approx(float(plain.diff) - shift, rel=1e-9)


def test_cuped_on_a_mean_metric_matches_ancova_in_statsmodels(
    users: dict[str, np.ndarray],
) -> None:
    c, t = arm_moments(users, "dwell")
    adjusted = compare(c, t, cuped=True)
    plain = compare(c, t)
    treated = users["treatment"].astype(float)
    covariate = users["pre_dwell"] - users["pre_dwell"].mean()
    design = sm.add_constant(np.column_stack([treated, covariate]))
    fit = sm.OLS(users["dwell"], design).fit(cov_type="HC2")
    # ANCOVA's within-group slope is CUPED's pooled theta; the treatment coefficient
    # is the adjusted lift, and its robust standard error the adjusted one
    assert float(adjusted.theta) == pytest.approx(fit.params[2], rel=1e-3)
    assert float(adjusted.diff) == pytest.approx(fit.params[1], abs=0.02 * float(adjusted.se))
    assert float(adjusted.se) == pytest.approx(fit.bse[1], rel=0.02)
    unadjusted = sm.OLS(users["dwell"], sm.add_constant(treated)).fit(cov_type="HC2")
    assert float(plain.se) == pytest.approx(unadjusted.bse[1], rel=1e-3)


def test_without_a_pre_period_cuped_changes_nothing() -> None:
    rng = np.random.default_rng(5)
    y, x = rng.poisson(1, 2000).astype(float), rng.poisson(20, 2000).astype(float) + 1
    arm = rng.random(2000) < 0.5
    c, t = Moments.of(y, x, weights=~arm), Moments.of(y, x, weights=arm)
    plain, adjusted = compare(c, t), compare(c, t, cuped=True)
    assert float(adjusted.theta) == 0.0
    assert float(adjusted.diff) == float(plain.diff) and float(adjusted.se) == float(plain.se)


def test_comparisons_broadcast_over_experiments(users: dict[str, np.ndarray]) -> None:
    c, t = arm_moments(users, "ctr")
    one = compare(c, t)
    stacked = compare(
        Moments(np.stack([c.n, c.n]), np.stack([c.sums, c.sums]), np.stack([c.cross, c.cross])),
        Moments(np.stack([t.n, t.n]), np.stack([t.sums, t.sums]), np.stack([t.cross, t.cross])),
    )
    assert stacked.diff.shape == (2,)
    np.testing.assert_allclose(stacked.p_value, [float(one.p_value)] * 2)
