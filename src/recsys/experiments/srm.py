"""The sample-ratio-mismatch (SRM) check: do the arms hold the designed shares of units?

A chi-square goodness-of-fit test of the units per arm against the experiment's
weights: ``X^2 = sum_k (o_k - e_k)^2 / e_k`` with ``e_k = N w_k``, ``k - 1`` degrees of
freedom. A mismatch means assignment, logging or attribution lost units unevenly, and
then no lift estimate can be trusted: the check runs before any metric is read. The
default level is 0.001 (with many experiments a level of 0.05 flags a healthy one in
twenty).

Example:
    >>> r = srm_check(np.array([4800, 5200]), (0.5, 0.5))
    >>> round(float(r.statistic), 1), bool(r.p_value < 0.001)
    (16.0, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special


@dataclass(frozen=True)
class SrmResult:
    """The chi-square test of arm counts against the design.

    Attributes:
        observed: units per arm.
        expected: units per arm the design expects.
        statistic: ``X^2``.
        df: degrees of freedom.
        p_value: its upper tail probability.
        flagged: ``p_value < alpha``.
    """

    observed: np.ndarray
    expected: np.ndarray
    statistic: np.ndarray
    df: int
    p_value: np.ndarray
    flagged: np.ndarray


def srm_check(counts: np.ndarray, weights: Sequence[float], alpha: float = 0.001) -> SrmResult:
    """Tests observed units per arm against designed weights.

    Args:
        counts: units per arm, arms on the last axis (leading axes broadcast).
        weights: designed arm weights (any positive scale).
        alpha: flagging level.

    Returns:
        The :class:`SrmResult`.
    """
    observed = np.asarray(counts, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    expected = observed.sum(axis=-1, keepdims=True) * w
    with np.errstate(invalid="ignore", divide="ignore"):
        stat = ((observed - expected) ** 2 / expected).sum(axis=-1)
    df = len(w) - 1
    p = special.chdtrc(df, stat)
    return SrmResult(observed, expected, stat, df, p, np.asarray(p < alpha))
