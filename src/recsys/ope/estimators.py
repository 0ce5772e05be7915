"""Off-policy estimators of a candidate policy's value from logged bandit feedback.

Every estimator has one interface: :meth:`OffPolicyEstimator.terms` turns a
:class:`~recsys.ope.logged.LoggedBandit` with a candidate attached into per-row
:class:`RowTerms`, and the estimate is

    mean(direct) + mean(weighted)                  (plain estimators)
    mean(direct) + sum(weighted) / sum(weight)     (self-normalized ones)

Writing all of them this way lets the bootstrap resample rows and recompute any
estimator from three sums, without re-running it (:mod:`recsys.ope.bootstrap`).

With ``w = target_pscore / pscore`` (the importance weight of the logged action),
``q(a)`` the reward model's prediction and ``dm = sum_a pi(a) q(a)`` per row:

* :class:`DirectMethod` (DM): ``mean(dm)``: no weights; biased by the reward model.
* :class:`InverseProbabilityWeighting` (IPS): ``mean(w r)``: unbiased with true
  propensities; high variance when ``w`` is large.
* :class:`SelfNormalizedIPS` (SNIPS): ``sum(w r) / sum(w)``: consistent, much smaller
  variance, small bias.
* :class:`DoublyRobust` (DR): ``mean(dm + w (r - q(a)))``: unbiased with true
  propensities whatever the reward model; lower variance the better the model.
* :class:`SwitchDoublyRobust` (switch-DR): DR's correction only where ``w <= tau``;
  DM elsewhere.
* :class:`DoublyRobustOptimisticShrinkage` (DRos): DR with ``w`` shrunk to
  ``lambda w / (w^2 + lambda)`` (Su et al., 2020).

Example:
    >>> import numpy as np
    >>> from recsys.ope.logged import LoggedBandit
    >>> log = LoggedBandit.build(action=[0, 1], reward=[1.0, 0.0], pscore=[0.5, 0.5],
    ...                          n_actions=2, action_dist=[[1.0, 0.0], [1.0, 0.0]])
    >>> InverseProbabilityWeighting().estimate(log)
    1.0
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from recsys.ope.errors import OPEInputError
from recsys.ope.logged import FloatArray, LoggedBandit


@dataclass(frozen=True)
class RowTerms:
    """An estimate as per-row terms: ``mean(direct) + mean|ratio(weighted, weight)``.

    Attributes:
        direct: the reward-model part per row (zeros for IPS and SNIPS).
        weighted: the importance-weighted part per row.
        weight: the normaliser per row of a self-normalized estimator; ``None`` for
            a plain mean.
    """

    direct: FloatArray
    weighted: FloatArray
    weight: FloatArray | None = None

    def value(self) -> float:
        """The estimate these terms add up to."""
        out = float(self.direct.mean())
        if self.weight is None:
            return out + float(self.weighted.mean())
        total = float(self.weight.sum())
        if total <= 0:
            raise OPEInputError(
                "self-normalization: the importance weights sum to 0 (the candidate gives "
                "probability 0 to every logged action)"
            )
        return out + float(self.weighted.sum()) / total

    def resampled(self, counts: npt.NDArray[np.int64]) -> FloatArray:
        """The estimate on each of several resamples of the rows.

        Args:
            counts: ``[b, n]``: how often each row appears in each of ``b`` resamples
                of ``n`` rows.

        Returns:
            ``[b]`` estimates.
        """
        c = counts.astype(np.float64)
        n = c.sum(axis=1)
        out = (c @ self.direct) / n
        if self.weight is None:
            return np.asarray(out + (c @ self.weighted) / n, dtype=np.float64)
        total = c @ self.weight
        # a resample without a row the candidate supports has no self-normalized
        # value; NaN keeps it out of the interval instead of dividing by zero
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(total > 0, (c @ self.weighted) / total, np.nan)
        return np.asarray(out + ratio, dtype=np.float64)


def _zeros(log: LoggedBandit) -> FloatArray:
    return np.zeros(log.n_rounds, dtype=np.float64)


def _require_dist(log: LoggedBandit, name: str) -> FloatArray:
    if log.action_dist is None:
        raise OPEInputError(
            f"{name}: needs the candidate's full action distribution per row (action_dist); "
            "only its probability of the logged action is attached"
        )
    return log.action_dist


def _require_model(log: LoggedBandit, name: str) -> FloatArray:
    if log.reward_hat is None:
        raise OPEInputError(
            f"{name}: needs a reward model's predictions per row and action (reward_hat)"
        )
    return log.reward_hat


def _dm_and_residual(log: LoggedBandit, name: str) -> tuple[FloatArray, FloatArray]:
    dist = _require_dist(log, name)
    q = _require_model(log, name)
    dm = np.einsum("ij,ij->i", dist, q)
    residual = log.reward - q[np.arange(log.n_rounds), log.action]
    return dm, residual


class OffPolicyEstimator(ABC):
    """An estimator of a candidate policy's mean reward per row (its value).

    Subclasses set :attr:`name` and implement :meth:`terms`.
    """

    name: str = "estimator"
    needs_reward_model: ClassVar[bool] = False
    """Whether :meth:`terms` needs ``reward_hat`` and ``action_dist``."""

    @abstractmethod
    def terms(self, log: LoggedBandit) -> RowTerms:
        """The per-row terms of the estimate on ``log``.

        Args:
            log: logged data with a candidate (and, where needed, a reward model).

        Returns:
            The terms; :meth:`RowTerms.value` is the estimate.

        Raises:
            OPEInputError: something the estimator needs is not attached.
        """

    def estimate(self, log: LoggedBandit) -> float:
        """The estimated value of the candidate attached to ``log``.

        Args:
            log: logged data with a candidate attached.

        Returns:
            The estimate (mean reward per row under the candidate).
        """
        return self.terms(log).value()


@dataclass(frozen=True)
class DirectMethod(OffPolicyEstimator):
    """DM: the reward model's value of the candidate, ``mean_i sum_a pi(a|x_i) q(x_i, a)``."""

    name: str = "DM"
    needs_reward_model: ClassVar[bool] = True

    def terms(self, log: LoggedBandit) -> RowTerms:
        dm, _ = _dm_and_residual(log, self.name)
        return RowTerms(direct=dm, weighted=_zeros(log))


@dataclass(frozen=True)
class InverseProbabilityWeighting(OffPolicyEstimator):
    """IPS: ``mean_i w_i r_i`` with ``w_i = pi(a_i|x_i) / pscore_i``."""

    name: str = "IPS"

    def terms(self, log: LoggedBandit) -> RowTerms:
        return RowTerms(direct=_zeros(log), weighted=log.importance_weights() * log.reward)


@dataclass(frozen=True)
class SelfNormalizedIPS(OffPolicyEstimator):
    """SNIPS: ``sum_i w_i r_i / sum_i w_i``."""

    name: str = "SNIPS"

    def terms(self, log: LoggedBandit) -> RowTerms:
        w = log.importance_weights()
        return RowTerms(direct=_zeros(log), weighted=w * log.reward, weight=w)


@dataclass(frozen=True)
class DoublyRobust(OffPolicyEstimator):
    """DR: ``mean_i [dm_i + w_i (r_i - q(x_i, a_i))]``."""

    name: str = "DR"
    needs_reward_model: ClassVar[bool] = True

    def terms(self, log: LoggedBandit) -> RowTerms:
        dm, residual = _dm_and_residual(log, self.name)
        return RowTerms(direct=dm, weighted=log.importance_weights() * residual)


@dataclass(frozen=True)
class SwitchDoublyRobust(OffPolicyEstimator):
    """Switch-DR: DR's correction on rows with ``w <= tau``, the reward model alone elsewhere.

    Args:
        tau: the largest importance weight whose correction is kept (``inf``: DR,
            ``0``: DM). Fixed in advance, not tuned on the same log.
    """

    tau: float = 10.0
    name: str = "switch-DR"
    needs_reward_model: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if math.isnan(self.tau) or self.tau < 0:
            raise OPEInputError(f"tau: must be >= 0, got {self.tau}")

    def terms(self, log: LoggedBandit) -> RowTerms:
        dm, residual = _dm_and_residual(log, self.name)
        w = log.importance_weights()
        return RowTerms(direct=dm, weighted=np.where(w <= self.tau, w * residual, 0.0))


@dataclass(frozen=True)
class DoublyRobustOptimisticShrinkage(OffPolicyEstimator):
    """DRos: DR with each weight shrunk to ``lambda w / (w^2 + lambda)``.

    Args:
        lambda_: the shrinkage scale (``inf``: DR; ``0``: DM). Fixed in advance.
    """

    lambda_: float = 100.0
    name: str = "DRos"
    needs_reward_model: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if math.isnan(self.lambda_) or self.lambda_ < 0:
            raise OPEInputError(f"lambda_: must be >= 0, got {self.lambda_}")

    def terms(self, log: LoggedBandit) -> RowTerms:
        dm, residual = _dm_and_residual(log, self.name)
        w = log.importance_weights()
        if math.isinf(self.lambda_):
            shrunk = w
        elif self.lambda_ == 0:
            shrunk = np.zeros_like(w)
        else:
            shrunk = self.lambda_ * w / (w * w + self.lambda_)
        return RowTerms(direct=dm, weighted=shrunk * residual)


def default_estimators(
    *, switch_tau: float = 10.0, dros_lambda: float = 100.0
) -> tuple[OffPolicyEstimator, ...]:
    """DM, IPS, SNIPS, DR, switch-DR and DRos, in that order.

    Args:
        switch_tau: switch-DR's weight threshold.
        dros_lambda: DRos's shrinkage scale.

    Returns:
        One estimator of each kind.

    Example:
        >>> [e.name for e in default_estimators()]
        ['DM', 'IPS', 'SNIPS', 'DR', 'switch-DR', 'DRos']
    """
    return (
        DirectMethod(),
        InverseProbabilityWeighting(),
        SelfNormalizedIPS(),
        DoublyRobust(),
        SwitchDoublyRobust(tau=switch_tau),
        DoublyRobustOptimisticShrinkage(lambda_=dros_lambda),
    )


ESTIMATOR_NAMES: tuple[str, ...] = ("dm", "ips", "snips", "dr", "switch-dr", "dros")
"""The names :func:`estimator_by_name` accepts (case-insensitive)."""


def estimator_by_name(
    name: str, *, switch_tau: float = 10.0, dros_lambda: float = 100.0
) -> OffPolicyEstimator:
    """The estimator called ``name`` (one of :data:`ESTIMATOR_NAMES`).

    Raises:
        OPEInputError: an unknown name.

    Example:
        >>> estimator_by_name("snips").name
        'SNIPS'
    """
    table = dict(
        zip(
            ESTIMATOR_NAMES,
            default_estimators(switch_tau=switch_tau, dros_lambda=dros_lambda),
            strict=True,
        )
    )
    key = name.strip().lower()
    if key not in table:
        raise OPEInputError(f"unknown estimator {name!r}; expected one of {ESTIMATOR_NAMES}")
    return table[key]
