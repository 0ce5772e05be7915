"""Reward models for DM and the doubly robust estimators: simple, fitted on the log.

* :class:`ItemPositionClickRate`: the click rate of each (action, position) pair,
  shrunk towards the position's click rate with ``smoothing`` pseudo-impressions
  (a Beta prior): with ~40 clicks over 240 pairs most pairs have no click, and an
  unsmoothed rate of 0 would tell DM that those items never get clicked.
* :class:`RidgeRewardModel`: one ridge regression of the reward on the context per
  action, for logs with context features (the synthetic problems).

:func:`item_position_refit` and :func:`ridge_refit` fit a model on a log and attach
its predictions, the ``refit`` hook of :mod:`recsys.ope.bootstrap`.

Example:
    >>> from recsys.ope.logged import LoggedBandit
    >>> log = LoggedBandit.build(action=[0, 0, 1], reward=[1, 0, 0],
    ...                          pscore=[0.5] * 3, n_actions=2)
    >>> model = ItemPositionClickRate.fit(log, smoothing=0.0)
    >>> model.rates[:, 0].tolist()
    [0.5, 0.0]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from recsys.ope.errors import OPEInputError
from recsys.ope.logged import FloatArray, LoggedBandit


@dataclass(frozen=True)
class ItemPositionClickRate:
    """The smoothed reward rate of every (action, position) pair.

    Attributes:
        rates: ``[n_actions, n_positions]`` predicted reward.
        smoothing: the pseudo-impressions each pair's rate was shrunk with.
    """

    rates: FloatArray
    smoothing: float

    @classmethod
    def fit(cls, log: LoggedBandit, smoothing: float = 10.0) -> ItemPositionClickRate:
        """Fits the rates on ``log``.

        Args:
            log: the logged data (actions, positions, rewards).
            smoothing: pseudo-impressions at the position's mean reward added to every
                pair (0: raw rates; an unseen pair then gets the position's rate).

        Returns:
            The fitted model.
        """
        if not np.isfinite(smoothing) or smoothing < 0:
            raise OPEInputError(f"smoothing: must be >= 0, got {smoothing}")
        k, p = log.n_actions, log.n_positions
        cell = log.action * p + log.position
        shows = np.bincount(cell, minlength=k * p).reshape(k, p).astype(np.float64)
        clicks = np.bincount(cell, weights=log.reward, minlength=k * p).reshape(k, p)
        pos_shows = shows.sum(axis=0)
        overall = float(log.reward.mean())
        # a position without rows falls back to the log's mean reward
        prior = np.where(pos_shows > 0, clicks.sum(axis=0) / np.maximum(pos_shows, 1), overall)
        denom = shows + smoothing
        with np.errstate(invalid="ignore", divide="ignore"):
            rates = np.where(denom > 0, (clicks + smoothing * prior) / denom, prior)
        return cls(rates=np.asarray(rates, dtype=np.float64), smoothing=float(smoothing))

    def predict(self, log: LoggedBandit) -> FloatArray:
        """``[n, n_actions]``: every action's rate at each row's position."""
        if self.rates.shape != (log.n_actions, log.n_positions):
            raise OPEInputError(
                f"reward model: fitted for {self.rates.shape} (actions, positions), the log "
                f"has ({log.n_actions}, {log.n_positions})"
            )
        return np.ascontiguousarray(self.rates[:, log.position].T)


def item_position_refit(smoothing: float = 10.0) -> Callable[[LoggedBandit], LoggedBandit]:
    """A ``refit`` hook: fits :class:`ItemPositionClickRate` on the log and attaches it.

    Example:
        >>> from recsys.ope.logged import LoggedBandit
        >>> log = LoggedBandit.build(action=[0, 1], reward=[1, 0], pscore=[0.5, 0.5],
        ...                          n_actions=2)
        >>> item_position_refit(0.0)(log).reward_hat.tolist()
        [[1.0, 0.0], [1.0, 0.0]]
    """

    def refit(log: LoggedBandit) -> LoggedBandit:
        return log.with_reward_model(ItemPositionClickRate.fit(log, smoothing).predict(log))

    return refit


@dataclass(frozen=True)
class RidgeRewardModel:
    """Per-action ridge regression of the reward on the context (with an intercept).

    Predictions are clipped to the range of the rewards it was fitted on: a linear model
    extrapolates far outside ``[0, 1]`` for contexts where the logger seldom shows an
    action, and DR's correction ``w (r - q)`` then adds variance instead of removing it.

    Attributes:
        coef: ``[n_actions, d + 1]`` weights, the intercept last.
        low: the smallest reward seen in fitting.
        high: the largest reward seen in fitting.
    """

    coef: FloatArray
    low: float = -np.inf
    high: float = np.inf

    @classmethod
    def fit(
        cls,
        context: FloatArray,
        action: np.ndarray,
        reward: FloatArray,
        n_actions: int,
        l2: float = 1.0,
    ) -> RidgeRewardModel:
        """Fits one regression per action on the rows that show it.

        Args:
            context: ``[n, d]`` features.
            action: ``[n]`` actions.
            reward: ``[n]`` rewards.
            n_actions: the number of actions.
            l2: the ridge penalty (not applied to the intercept). An action without
                rows predicts the log's mean reward.

        Returns:
            The fitted model.
        """
        if l2 < 0:
            raise OPEInputError(f"l2: must be >= 0, got {l2}")
        x = np.hstack([context, np.ones((context.shape[0], 1))])
        d = x.shape[1]
        penalty = np.eye(d) * l2
        penalty[-1, -1] = 1e-9  # the intercept is not shrunk
        coef = np.zeros((n_actions, d))
        coef[:, -1] = float(reward.mean()) if reward.size else 0.0
        for a in range(n_actions):
            rows = action == a
            if not rows.any():
                continue
            xa = x[rows]
            # lstsq, not solve: with l2 = 0 and few rows the normal equations are singular
            coef[a] = np.linalg.lstsq(xa.T @ xa + penalty, xa.T @ reward[rows], rcond=None)[0]
        low, high = (float(reward.min()), float(reward.max())) if reward.size else (0.0, 0.0)
        return cls(coef=coef, low=low, high=high)

    def predict(self, context: FloatArray, *, clip: bool = True) -> FloatArray:
        """``[n, n_actions]`` predicted reward of every action.

        Args:
            context: ``[n, d]`` features.
            clip: clip to the fitted rewards' range (``[low, high]``).
        """
        x = np.hstack([context, np.ones((context.shape[0], 1))])
        pred = x @ self.coef.T
        return np.asarray(np.clip(pred, self.low, self.high) if clip else pred, dtype=np.float64)


def ridge_refit(l2: float = 1.0) -> Callable[[LoggedBandit], LoggedBandit]:
    """A ``refit`` hook: fits :class:`RidgeRewardModel` on the log's context and attaches it."""

    def refit(log: LoggedBandit) -> LoggedBandit:
        if log.context is None:
            raise OPEInputError("ridge reward model: the log has no context features")
        model = RidgeRewardModel.fit(log.context, log.action, log.reward, log.n_actions, l2)
        return log.with_reward_model(model.predict(log.context))

    return refit
