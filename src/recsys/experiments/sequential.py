"""Always-valid inference: the mixture sequential probability ratio test (mSPRT).

Johari, Koomen, Pekelis and Walsh ("Peeking at A/B tests", KDD 2017; "Always valid
inference", Operations Research 2022): at each look ``n`` the estimate ``d_n`` of the
lift is approximately ``N(d, V_n)``. Against ``H0: d = 0``, the likelihood ratio of
``d`` mixed over a normal prior ``N(0, tau^2)`` is

    Lambda_n = sqrt(V_n / (V_n + tau^2)) * exp(tau^2 d_n^2 / (2 V_n (V_n + tau^2)))

a martingale under ``H0`` with mean 1, so by Ville's inequality it exceeds ``1/alpha``
at any look with probability at most ``alpha``. The always-valid p-value is
``p_n = min(1, min_{k <= n} 1 / Lambda_k)``: stopping the first time ``p_n < alpha``,
however often one looks, keeps the false-positive rate at most ``alpha``. Inverting the
test at every ``d0`` gives the confidence sequence

    d_n +- sqrt(V_n (V_n + tau^2) / tau^2 * (2 log(1/alpha) + log((V_n + tau^2) / V_n)))

which holds the true lift at every look at once with probability ``1 - alpha``; its
running intersection (reported here) is one too.
``V_n`` is the plug-in (delta-method, CUPED-adjusted where used) variance of ``d_n``;
``tau`` is the mixture's spread, set from the design (:class:`AnalysisConfig.mixture_sd`
times the control mean): effects near ``tau`` are detected soonest.

Example:
    >>> import numpy as np
    >>> r = msprt(np.array([0.0, 0.01, 0.02]), np.array([1e-4, 5e-5, 2.5e-5]), tau=0.05)
    >>> np.round(r.p_values, 4).tolist(), r.first_rejection
    ([1.0, 1.0, 0.0036], 2)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.experiments.moments import Moments
from recsys.experiments.stats import Comparison, compare


@dataclass(frozen=True)
class SequentialResult:
    """The mSPRT over looks (last axis), for any leading shape.

    Attributes:
        diff: the lift estimate at each look.
        var: its variance at each look.
        log_lr: ``log Lambda`` at each look.
        p_values: always-valid p-values (non-increasing along looks).
        lower: confidence sequence (running intersection), lower end at each look.
        upper: upper end.
        first_rejection: index of the first look with ``p < alpha`` (-1: none), for a
            single experiment; an array of them otherwise.
        alpha: the level.
    """

    diff: np.ndarray
    var: np.ndarray
    log_lr: np.ndarray
    p_values: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    first_rejection: int | np.ndarray
    alpha: float

    @property
    def rejected(self) -> np.ndarray:
        """Whether the test rejected at some look."""
        return np.asarray(self.p_values[..., -1] < self.alpha)


def mixture_log_lr(diff: np.ndarray, var: np.ndarray, tau: float | np.ndarray) -> np.ndarray:
    """``log Lambda`` of the normal mixture against ``d = 0``.

    Args:
        diff: lift estimates.
        var: their variances (NaN or <= 0: no information, ``log Lambda = 0``).
        tau: the mixture's standard deviation (broadcasts).

    Returns:
        ``log Lambda``, same shape.
    """
    tau2 = np.asarray(tau, dtype=np.float64) ** 2
    ok = np.isfinite(var) & (var > 0) & np.isfinite(diff)
    v = np.where(ok, var, 1.0)
    d = np.where(ok, diff, 0.0)
    out = 0.5 * np.log(v / (v + tau2)) + tau2 * d**2 / (2 * v * (v + tau2))
    return np.where(ok, out, 0.0)


def msprt(
    diff: np.ndarray, var: np.ndarray, tau: float | np.ndarray, alpha: float = 0.05
) -> SequentialResult:
    """Always-valid p-values and the confidence sequence over looks.

    Args:
        diff: lift estimate per look, looks on the last axis.
        var: its variance per look.
        tau: mixture standard deviation (scalar, or broadcasting over leading axes
            with a trailing axis of 1).
        alpha: the level.

    Returns:
        The :class:`SequentialResult`.
    """
    diff = np.asarray(diff, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    log_lr = mixture_log_lr(diff, var, tau)
    p = np.minimum.accumulate(np.minimum(1.0, np.exp(-log_lr)), axis=-1)
    tau2 = np.asarray(tau, dtype=np.float64) ** 2
    ok = np.isfinite(var) & (var > 0) & np.isfinite(diff)
    v = np.where(ok, var, 1.0)
    half = np.sqrt(v * (v + tau2) / tau2 * (2 * np.log(1 / alpha) + np.log((v + tau2) / v)))
    below = p < alpha
    first = np.where(below.any(axis=-1), below.argmax(axis=-1), -1)
    # the running intersection is a confidence sequence too, and it excludes d0 exactly
    # when the running-minimum p-value of d0 is below alpha (the two agree)
    # a look without information bounds nothing (and must not turn the running
    # intersection into NaN)
    lower = np.maximum.accumulate(np.where(ok, diff - half, -np.inf), axis=-1)
    upper = np.minimum.accumulate(np.where(ok, diff + half, np.inf), axis=-1)
    return SequentialResult(
        diff=diff,
        var=var,
        log_lr=log_lr,
        p_values=p,
        lower=lower,
        upper=upper,
        first_rejection=int(first) if first.ndim == 0 else first,
        alpha=alpha,
    )


def sequential_compare(
    control: Moments,
    treatment: Moments,
    mixture_sd: float = 0.05,
    alpha: float = 0.05,
    cuped: bool = False,
) -> tuple[SequentialResult, Comparison]:
    """The mSPRT of one metric from cumulative per-look moments.

    Args:
        control: the control arm's moments at each look (looks on the last leading axis).
        treatment: the treatment arm's.
        mixture_sd: ``tau`` as a share of the control mean at the first look with two or
            more units in each arm (fixed from then on: the mixture may not follow the data).
        alpha: the level.
        cuped: use the CUPED-adjusted estimate and variance.

    Returns:
        The sequential result and the per-look :class:`Comparison`.
    """
    comp = compare(control, treatment, alpha=alpha, cuped=cuped)
    valid = np.isfinite(comp.se) & (comp.se > 0) & np.isfinite(comp.control)
    first = np.where(valid.any(axis=-1), valid.argmax(axis=-1), 0)
    base = np.take_along_axis(np.asarray(comp.control), first[..., None], axis=-1)
    tau = mixture_sd * np.abs(np.nan_to_num(base, nan=1.0))
    tau = np.where(tau > 0, tau, mixture_sd)
    return msprt(comp.diff, comp.se**2, tau, alpha), comp
