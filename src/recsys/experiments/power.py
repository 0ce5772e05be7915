"""Power and sample size of a two-arm comparison (two-sided, normal approximation).

With per-unit variance ``s^2`` (of the linearized metric, :mod:`recsys.experiments.stats`;
CUPED multiplies it by ``1 - rho^2``), ``N`` units split by weights ``w_c, w_t`` and a
true lift ``d``, the estimate's standard error is ``se = s sqrt(1/(N w_c) + 1/(N w_t))``
and the power of the level-``alpha`` test is
``Phi(|d|/se - z_{1-alpha/2}) + Phi(-|d|/se - z_{1-alpha/2})``. The units needed for
power ``1 - beta`` solve ``|d| / se = z_{1-alpha/2} + z_{1-beta}`` (the second tail
neglected, as is usual):
``N = (z_{1-alpha/2} + z_{1-beta})^2 s^2 (1/w_c + 1/w_t) / d^2``; the smallest lift
detected with power ``1 - beta`` at ``N`` units is
``(z_{1-alpha/2} + z_{1-beta}) s sqrt(1/(N w_c) + 1/(N w_t))``.

:func:`assess_power` puts the three together for one arm and metric of an experiment
report (:class:`PowerAssessment`).

Example:
    >>> required_units(unit_variance=1.0, effect=0.1)
    3140
    >>> round(power_at(1.0, 0.1, 3140), 3)
    0.8
    >>> round(detectable_effect(1.0, 3140), 4)
    0.1
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from scipy import special


def power_at(
    unit_variance: float,
    effect: float,
    units: int,
    alpha: float = 0.05,
    weights: Sequence[float] = (0.5, 0.5),
) -> float:
    """The power of the two-sided test with ``units`` units in all.

    Args:
        unit_variance: per-unit variance of the metric (equal in both arms).
        effect: the true absolute lift.
        units: units in both arms together.
        alpha: the test's level.
        weights: control and treatment shares.

    Returns:
        The probability of rejecting ``d = 0``.
    """
    wc, wt = (w / sum(weights) for w in weights)
    se = math.sqrt(unit_variance * (1 / (units * wc) + 1 / (units * wt)))
    z = float(special.ndtri(1 - alpha / 2))
    shift = abs(effect) / se
    return float(special.ndtr(shift - z) + special.ndtr(-shift - z))


def required_units(
    unit_variance: float,
    effect: float,
    alpha: float = 0.05,
    power: float = 0.8,
    weights: Sequence[float] = (0.5, 0.5),
) -> int:
    """Units (both arms together) for the given power at the given lift.

    Args:
        unit_variance: per-unit variance of the metric.
        effect: the absolute lift to detect (e.g. 3% of the control CTR).
        alpha: the test's level.
        power: the wanted power.
        weights: control and treatment shares.

    Returns:
        The smallest whole number of units, rounded up.
    """
    wc, wt = (w / sum(weights) for w in weights)
    z = float(special.ndtri(1 - alpha / 2) + special.ndtri(power))
    return math.ceil(z**2 * unit_variance * (1 / wc + 1 / wt) / effect**2)


def detectable_effect(
    unit_variance: float,
    units: int,
    alpha: float = 0.05,
    power: float = 0.8,
    weights: Sequence[float] = (0.5, 0.5),
) -> float:
    """The smallest absolute lift detected with ``power`` at ``units`` (the MDE).

    The inverse of :func:`required_units` (the second tail neglected the same way).

    Args:
        unit_variance: per-unit variance of the metric.
        units: units in both arms together.
        alpha: the test's level.
        power: the wanted power.
        weights: control and treatment shares.

    Returns:
        ``(z_{1-alpha/2} + z_{power}) * se`` at ``units``.
    """
    wc, wt = (w / sum(weights) for w in weights)
    z = float(special.ndtri(1 - alpha / 2) + special.ndtri(power))
    return z * math.sqrt(unit_variance * (1 / (units * wc) + 1 / (units * wt)))


@dataclass(frozen=True)
class PowerAssessment:
    """The power of one treatment arm's fixed-horizon test on one metric.

    Attributes:
        metric: the metric.
        arm: the treatment arm (against the control).
        cuped: the variance is the CUPED-adjusted one.
        unit_variance: per-unit variance of the linearized metric, pooled over the
            control and this arm (NaN when it cannot be estimated).
        control_mean: the control arm's estimate; the absolute lift is ``mde`` times it.
        alpha: the level of the arm's test (``alpha`` over the treatment arms).
        target: the wanted power.
        units: units analysed, all arms.
        n_control: the control's units.
        n_treatment: this arm's units.
        pair_share: the control's and this arm's designed share of all units.
        detectable: the smallest relative lift detected with power ``target`` at the
            control's and this arm's units so far (NaN when not estimable).
        mde: the relative lift the experiment must detect, or None.
        power: the power at the units so far against ``mde`` (None without ``mde`` or
            without an estimate).
        required_units: units, all arms at their designed shares, for power ``target``
            at ``mde`` (None without ``mde`` or without an estimate).
        planned_units: the configured plan, or None.
        planned_power: the power at ``planned_units`` against ``mde`` (None without both).
    """

    metric: str
    arm: str
    cuped: bool
    unit_variance: float
    control_mean: float
    alpha: float
    target: float
    units: int
    n_control: int
    n_treatment: int
    pair_share: float
    detectable: float
    mde: float | None = None
    power: float | None = None
    required_units: int | None = None
    planned_units: int | None = None
    planned_power: float | None = None

    @property
    def reached(self) -> bool | None:
        """The units so far reach ``required_units`` (None when there is none)."""
        return None if self.required_units is None else self.units >= self.required_units

    def row(self) -> dict[str, float | int | str | bool | None]:
        """Plain values for tables and JSON (``reached`` included)."""
        return {**self.__dict__, "reached": self.reached}


def assess_power(
    metric: str,
    arm: str,
    unit_variance: float,
    control_mean: float,
    n_control: int,
    n_treatment: int,
    shares: tuple[float, float],
    units: int,
    alpha: float = 0.05,
    target: float = 0.8,
    mde: float | None = None,
    cuped: bool = False,
    planned_units: int | None = None,
) -> PowerAssessment:
    """Power at the traffic so far, the traffic needed, and the detectable lift.

    * ``power``: :func:`power_at` at the ``n_control + n_treatment`` units so far (split
      as observed) against the absolute lift ``mde * |control_mean|``;
    * ``required_units``: :func:`required_units` of the pair at its designed shares,
      over the pair's share of all units (so all arms, rounded up);
    * ``detectable``: :func:`detectable_effect` at the units so far, over
      ``|control_mean|``.

    Args:
        metric: the metric.
        arm: the treatment arm.
        unit_variance: the pooled per-unit variance
            (:func:`recsys.experiments.stats.pooled_unit_variance`).
        control_mean: the control's estimate of the metric.
        n_control: the control's units so far.
        n_treatment: the arm's units so far.
        shares: the control's and the arm's designed shares of all units.
        units: units so far, all arms.
        alpha: the test's level.
        target: the wanted power.
        mde: the relative lift to detect, or None.
        cuped: ``unit_variance`` is CUPED-adjusted.
        planned_units: the configured plan (all arms), or None.

    Returns:
        The :class:`PowerAssessment`; its numbers are NaN or None where the variance or
        the control mean cannot be estimated (fewer than two units an arm, a zero mean).

    Example:
        >>> a = assess_power("ctr", "t", 0.05, 0.05, 20_000, 20_000, (0.5, 0.5), 40_000,
        ...                  mde=0.03)
        >>> a.required_units, round(a.power, 3), round(a.detectable, 4)
        (697679, 0.103, 0.1253)
    """
    base = abs(control_mean)
    pair_share = shares[0] + shares[1]
    ok = (
        n_control >= 2
        and n_treatment >= 2
        and math.isfinite(unit_variance)
        and unit_variance > 0
        and math.isfinite(base)
        and base > 0
    )
    out = PowerAssessment(
        metric=metric,
        arm=arm,
        cuped=cuped,
        unit_variance=float(unit_variance),
        control_mean=float(control_mean),
        alpha=alpha,
        target=target,
        units=int(units),
        n_control=int(n_control),
        n_treatment=int(n_treatment),
        pair_share=pair_share,
        detectable=math.nan,
        mde=mde,
        planned_units=planned_units,
    )
    if not ok:
        return out
    so_far = n_control + n_treatment
    observed = (n_control, n_treatment)
    detectable = detectable_effect(unit_variance, so_far, alpha, target, observed) / base
    if mde is None:
        return replace(out, detectable=detectable)
    effect = mde * base
    pair = required_units(unit_variance, effect, alpha, target, shares)
    planned_power = None
    if planned_units is not None:
        planned_pair = max(2, round(planned_units * pair_share))
        planned_power = power_at(unit_variance, effect, planned_pair, alpha, shares)
    return replace(
        out,
        detectable=detectable,
        power=power_at(unit_variance, effect, so_far, alpha, observed),
        required_units=math.ceil(pair / pair_share - 1e-9),
        planned_power=planned_power,
    )
