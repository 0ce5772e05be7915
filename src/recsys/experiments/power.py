"""Power and sample size of a two-arm comparison (two-sided, normal approximation).

With per-unit variance ``s^2`` (of the linearized metric, :mod:`recsys.experiments.stats`;
CUPED multiplies it by ``1 - rho^2``), ``N`` units split by weights ``w_c, w_t`` and a
true lift ``d``, the estimate's standard error is ``se = s sqrt(1/(N w_c) + 1/(N w_t))``
and the power of the level-``alpha`` test is
``Phi(|d|/se - z_{1-alpha/2}) + Phi(-|d|/se - z_{1-alpha/2})``. The units needed for
power ``1 - beta`` solve ``|d| / se = z_{1-alpha/2} + z_{1-beta}`` (the second tail
neglected, as is usual):
``N = (z_{1-alpha/2} + z_{1-beta})^2 s^2 (1/w_c + 1/w_t) / d^2``.

Example:
    >>> required_units(unit_variance=1.0, effect=0.1)
    3140
    >>> round(power_at(1.0, 0.1, 3140), 3)
    0.8
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
