"""Fixed-horizon comparisons of two arms: delta method, lifts, Welch tests, CUPED.

Every metric is a ratio ``R = mean(y) / mean(x)`` over an arm's units (a mean metric
has ``x = 1``). Its variance over units comes from the delta method through the
*linearized* per-unit value ``L = (y - R x) / mean(x)``: ``Var(R_hat) ~ Var(L) / n``.
Between two independent arms:

* absolute lift ``d = R_t - R_c``, ``se = sqrt(Var_t(L)/n_t + Var_c(L)/n_c)``, a Welch
  t-interval and p-value with the Welch-Satterthwaite degrees of freedom (for a mean
  metric this is exactly Welch's t-test);
* relative lift ``R_t / R_c - 1``, its variance by the delta method:
  ``Var_t / R_c^2 + R_t^2 Var_c / R_c^4`` (each ``Var`` the variance of that arm's
  estimate), a normal interval;
* CUPED: the pre-period value of the same metric, linearized the same way (``L_pre``),
  is the covariate. ``theta = Cov(L, L_pre) / Var(L_pre)``, pooled over both arms
  (deviations from each arm's own means); the adjusted arm estimate is
  ``R - theta (R_pre - R_pre_pooled)`` with per-unit variance
  ``Var(L) - 2 theta Cov(L, L_pre) + theta^2 Var(L_pre)``: the variance falls by the
  share ``rho^2``, the squared correlation of ``L`` and ``L_pre``. A unit without
  pre-period data has ``L_pre = 0`` for a ratio metric (no pre-period impressions) and
  a pre-period value of 0 for a mean metric.

Everything is computed from :class:`~recsys.experiments.moments.Moments` and broadcasts
over leading axes, so thousands of simulated experiments compare in one call.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> c = Moments.of(rng.normal(10, 2, 5000), np.ones(5000))
    >>> t = Moments.of(rng.normal(10.5, 2, 5000), np.ones(5000))
    >>> r = compare(c, t)
    >>> bool(r.ci_low < 0.5 < r.ci_high), bool(r.p_value < 0.001)
    (True, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from recsys.experiments.moments import Moments


@dataclass(frozen=True)
class ArmSummary:
    """One arm's ratio estimate and the linearized per-unit (co)variances.

    Attributes:
        n: units.
        mean: ``R = mean(y) / mean(x)``.
        unit_var: ``Var(L)``, so that ``Var(R_hat) ~ unit_var / n``.
        pre_mean: ``R_pre`` (0 without pre-period data).
        pre_var: ``Var(L_pre)``.
        pre_cov: ``Cov(L, L_pre)``.
        pre_y: mean pre-period numerator (for the pooled ``R_pre``).
        pre_x: mean pre-period denominator.
    """

    n: np.ndarray
    mean: np.ndarray
    unit_var: np.ndarray
    pre_mean: np.ndarray
    pre_var: np.ndarray
    pre_cov: np.ndarray
    pre_y: np.ndarray
    pre_x: np.ndarray


def summarize(m: Moments) -> ArmSummary:
    """The delta-method summary of one arm.

    Args:
        m: the arm's moments.

    Returns:
        Its :class:`ArmSummary` (same leading shape).

    Example:
        >>> s = summarize(Moments.of(np.array([1.0, 3.0]), np.array([2.0, 2.0])))
        >>> s.mean.item(), s.unit_var.item()
        (1.0, 0.5)
    """
    mu, c = m.mean, m.cov
    my, mx, myp, mxp = mu[..., 0], mu[..., 1], mu[..., 2], mu[..., 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = my / mx
        g = np.stack([1.0 / mx, -my / mx**2], axis=-1)
        has_pre = mxp > 0
        safe = np.where(has_pre, mxp, 1.0)
        pre_ratio = np.where(has_pre, myp / safe, 0.0)
        gp = np.where(has_pre[..., None], np.stack([1.0 / safe, -myp / safe**2], axis=-1), 0.0)
    unit_var = _quad(g, c[..., :2, :2], g)
    pre_var = _quad(gp, c[..., 2:, 2:], gp)
    pre_cov = _quad(g, c[..., :2, 2:], gp)
    return ArmSummary(m.n, ratio, unit_var, pre_ratio, pre_var, pre_cov, myp, mxp)


def _quad(a: np.ndarray, matrix: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("...i,...ij,...j->...", a, matrix, b)


def pooled_theta(*arms: ArmSummary) -> np.ndarray:
    """CUPED's ``theta``: within-arm covariance over within-arm variance, pooled.

    Args:
        arms: the arms' summaries.

    Returns:
        ``sum (n-1) Cov(L, L_pre) / sum (n-1) Var(L_pre)`` (0 where the pre-period
        varies in no arm).
    """
    num = sum(np.nan_to_num((a.n - 1) * a.pre_cov) for a in arms)
    den = sum(np.nan_to_num((a.n - 1) * a.pre_var) for a in arms)
    den_arr = np.asarray(den, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den_arr > 0, np.asarray(num) / np.where(den_arr > 0, den_arr, 1.0), 0.0)


@dataclass(frozen=True)
class Comparison:
    """Treatment against control for one metric (arrays over any leading shape).

    Attributes:
        n_control: control units.
        n_treatment: treatment units.
        control: control estimate (CUPED-adjusted when ``theta`` != 0).
        treatment: treatment estimate.
        diff: absolute lift ``treatment - control``.
        se: its standard error.
        df: Welch-Satterthwaite degrees of freedom.
        ci_low: lower end of the ``1 - alpha`` interval of ``diff``.
        ci_high: upper end.
        p_value: two-sided Welch t-test of ``diff = 0``.
        rel: relative lift ``treatment / control - 1``.
        rel_se: its delta-method standard error.
        rel_low: lower end of its normal interval.
        rel_high: upper end.
        theta: CUPED coefficient (0: not adjusted).
        variance_reduction: ``1 - Var(diff adjusted) / Var(diff unadjusted)``.
    """

    n_control: np.ndarray
    n_treatment: np.ndarray
    control: np.ndarray
    treatment: np.ndarray
    diff: np.ndarray
    se: np.ndarray
    df: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_value: np.ndarray
    rel: np.ndarray
    rel_se: np.ndarray
    rel_low: np.ndarray
    rel_high: np.ndarray
    theta: np.ndarray
    variance_reduction: np.ndarray

    def row(self) -> dict[str, float]:
        """The comparison of one experiment as plain floats (for tables and JSON)."""
        return {k: float(np.asarray(v)) for k, v in self.__dict__.items()}


def compare(
    control: Moments, treatment: Moments, alpha: float = 0.05, cuped: bool = False
) -> Comparison:
    """Compares two arms on one metric.

    Args:
        control: the control arm's moments.
        treatment: the treatment arm's moments (same leading shape).
        alpha: 1 - the intervals' confidence.
        cuped: adjust with the pre-period covariate (no effect without pre-period data).

    Returns:
        The :class:`Comparison`.
    """
    c, t = summarize(control), summarize(treatment)
    theta = pooled_theta(c, t) if cuped else np.zeros_like(c.mean)
    pre_pool_num = c.n * c.pre_y + t.n * t.pre_y
    pre_pool_den = c.n * c.pre_x + t.n * t.pre_x
    with np.errstate(invalid="ignore", divide="ignore"):
        pre_pool = np.where(pre_pool_den > 0, pre_pool_num / pre_pool_den, 0.0)
        mc = c.mean - theta * (c.pre_mean - pre_pool)
        mt = t.mean - theta * (t.pre_mean - pre_pool)
        vc = (c.unit_var - 2 * theta * c.pre_cov + theta**2 * c.pre_var) / c.n
        vt = (t.unit_var - 2 * theta * t.pre_cov + theta**2 * t.pre_var) / t.n
        plain = c.unit_var / c.n + t.unit_var / t.n
        var = vc + vt
        se = np.sqrt(var)
        df = var**2 / (vc**2 / (c.n - 1) + vt**2 / (t.n - 1))
        diff = mt - mc
        tq = special.stdtrit(df, 1 - alpha / 2)
        p = 2 * special.stdtr(df, -np.abs(diff) / se)
        rel = mt / mc - 1
        rel_se = np.sqrt(vt / mc**2 + mt**2 * vc / mc**4)
        z = special.ndtri(1 - alpha / 2)
        reduction = 1 - var / plain
    return Comparison(
        n_control=c.n,
        n_treatment=t.n,
        control=mc,
        treatment=mt,
        diff=diff,
        se=se,
        df=df,
        ci_low=diff - tq * se,
        ci_high=diff + tq * se,
        p_value=p,
        rel=rel,
        rel_se=rel_se,
        rel_low=rel - z * rel_se,
        rel_high=rel + z * rel_se,
        theta=theta,
        variance_reduction=reduction,
    )


def pooled_unit_variance(control: Moments, treatment: Moments, cuped: bool = False) -> np.ndarray:
    """Per-unit variance of the linearized metric, pooled over two arms (power, sample size).

    Each arm's ``Var(L)`` (with ``cuped``: ``Var(L) - 2 theta Cov(L, L_pre) +
    theta^2 Var(L_pre)`` with the pooled ``theta`` of :func:`compare`), weighted by the
    arm's units.

    Args:
        control: the control arm's moments.
        treatment: the treatment arm's moments (same leading shape).
        cuped: the CUPED-adjusted variance.

    Returns:
        ``(n_c s_c^2 + n_t s_t^2) / (n_c + n_t)``.

    Example:
        >>> c = Moments.of(np.array([1.0, 3.0]), np.ones(2))
        >>> t = Moments.of(np.array([2.0, 4.0, 6.0]), np.ones(3))
        >>> pooled_unit_variance(c, t).item()
        3.2
    """
    c, t = summarize(control), summarize(treatment)
    theta = pooled_theta(c, t) if cuped else np.zeros_like(c.mean)
    vc, vt = (a.unit_var - 2 * theta * a.pre_cov + theta**2 * a.pre_var for a in (c, t))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (c.n * vc + t.n * vt) / (c.n + t.n)
