"""Logged bandit feedback: one row per shown (context, action, position) with its reward.

A row says which action (item) the logging policy showed, at which position, what the
reward was (a click), and the logging policy's probability of showing that action at
that position (its *propensity*, ``pscore``). Off-policy evaluation adds, per row, what
the candidate policy would do there:

* ``target_pscore``: the candidate's probability of the logged action at the logged
  position (enough for IPS and SNIPS);
* ``action_dist``: the candidate's whole distribution over actions at the row's position
  (shape ``[n, n_actions]``; DM and the doubly robust family need it);
* ``reward_hat``: a reward model's prediction for every action at the row's position
  (shape ``[n, n_actions]``; DM and the doubly robust family need it).

Rows of a slate are rows of their own (the item-position level): a policy's value is
the mean reward per row, the click rate per shown slot.

Example:
    >>> import numpy as np
    >>> log = LoggedBandit.build(action=[0, 1, 1], reward=[1, 0, 1],
    ...                          pscore=[0.5, 0.5, 0.5], n_actions=2)
    >>> log.with_candidate(np.array([[0.9, 0.1]] * 3)).target_pscore.tolist()
    [0.9, 0.1, 0.1]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from recsys.ope.errors import OPEInputError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PROBABILITY_SUM_TOLERANCE = 1e-6
"""How far a row of ``action_dist`` may sum from 1 (Monte Carlo and float round-off)."""


def _rows(mask: npt.NDArray[np.bool_]) -> str:
    bad = np.flatnonzero(mask)
    return f"{bad.size} rows (first: row {int(bad[0])})"


def check_probabilities(name: str, values: npt.ArrayLike, *, positive: bool = False) -> FloatArray:
    """``values`` as float64, checked to be finite probabilities.

    Args:
        name: the field's name, used in the error message.
        values: the probabilities (any shape).
        positive: require ``> 0`` (propensities: a row the logger could not show
            cannot be reweighted).

    Returns:
        The values as a float64 array.

    Raises:
        OPEInputError: a value is NaN or infinite, below 0 (or not above 0 when
            ``positive``), or above 1.

    Example:
        >>> check_probabilities("pscore", [0.5, 1.0], positive=True).tolist()
        [0.5, 1.0]
    """
    arr = np.asarray(values, dtype=np.float64)

    def rows(mask: npt.NDArray[np.bool_]) -> str:
        # a matrix reports rows, not cells: "row 7" is what a user can look up
        per_row = mask.reshape(mask.shape[0], -1).any(axis=1) if mask.ndim > 1 else mask
        return _rows(np.asarray(per_row, dtype=np.bool_))

    if not np.isfinite(arr).all():
        raise OPEInputError(f"{name}: NaN or infinite in {rows(~np.isfinite(arr))}")
    if positive and (arr <= 0).any():
        raise OPEInputError(
            f"{name}: must be > 0 (a propensity of 0 cannot be reweighted); "
            f"{rows(arr <= 0)} are <= 0"
        )
    if (arr < 0).any():
        raise OPEInputError(f"{name}: probabilities must be >= 0; {rows(arr < 0)} are not")
    if (arr > 1).any():
        raise OPEInputError(f"{name}: probabilities must be <= 1; {rows(arr > 1)} are not")
    return arr


def _as_1d(name: str, values: npt.ArrayLike, n: int | None) -> npt.NDArray[Any]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise OPEInputError(f"{name}: expected one value per row (1-d), got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise OPEInputError(f"{name}: expected {n} rows, got {arr.shape[0]}")
    return arr


def _as_int(name: str, values: npt.ArrayLike, n: int, upper: int) -> IntArray:
    raw = _as_1d(name, values, n)
    if raw.dtype.kind == "f":
        if not np.isfinite(raw).all() or (raw != np.round(raw)).any():
            raise OPEInputError(f"{name}: expected integers")
    elif raw.dtype.kind not in "iub":
        raise OPEInputError(f"{name}: expected integers, got dtype {raw.dtype}")
    arr = raw.astype(np.int64)
    bad = (arr < 0) | (arr >= upper)
    if bad.any():
        raise OPEInputError(f"{name}: must lie in [0, {upper}); {_rows(bad)} do not")
    return arr


@dataclass(frozen=True)
class LoggedBandit:
    """Logged bandit feedback at the item-position level (build with :meth:`build`).

    Attributes:
        action: the shown action of each row, ``0 .. n_actions - 1``.
        reward: the observed reward of each row (a click: 0 or 1).
        pscore: the logging policy's probability of the row's action at its position.
        position: the row's slot, ``0 .. n_positions - 1`` (0 = first).
        n_actions: the number of actions the policies choose from.
        n_positions: the number of slots.
        context: optional row features, ``[n, d]``.
        target_pscore: the candidate policy's probability of the row's action at its
            position.
        action_dist: the candidate's distribution over actions at the row's position.
        reward_hat: a reward model's prediction for each action at the row's position.
        action_ids: optional original ids of the actions (``action_ids[a]``).
    """

    action: IntArray
    reward: FloatArray
    pscore: FloatArray
    position: IntArray
    n_actions: int
    n_positions: int
    context: FloatArray | None = None
    target_pscore: FloatArray | None = None
    action_dist: FloatArray | None = None
    reward_hat: FloatArray | None = None
    action_ids: tuple[Any, ...] | None = None

    @classmethod
    def build(
        cls,
        *,
        action: npt.ArrayLike,
        reward: npt.ArrayLike,
        pscore: npt.ArrayLike,
        n_actions: int,
        position: npt.ArrayLike | None = None,
        n_positions: int | None = None,
        context: npt.ArrayLike | None = None,
        target_pscore: npt.ArrayLike | None = None,
        action_dist: npt.ArrayLike | None = None,
        reward_hat: npt.ArrayLike | None = None,
        action_ids: Sequence[Any] | None = None,
    ) -> LoggedBandit:
        """Checks and converts the columns into a :class:`LoggedBandit`.

        Args:
            action: the shown action per row (integers in ``[0, n_actions)``).
            reward: the reward per row (finite).
            pscore: the logging policy's propensity per row, in ``(0, 1]``.
            n_actions: the number of actions.
            position: the slot per row (default: every row at slot 0).
            n_positions: the number of slots (default: ``max(position) + 1``).
            context: optional ``[n, d]`` features.
            target_pscore: the candidate's probability of the logged action, in
                ``[0, 1]``; derived from ``action_dist`` when omitted.
            action_dist: the candidate's ``[n, n_actions]`` distribution per row.
            reward_hat: a reward model's ``[n, n_actions]`` predictions per row.
            action_ids: original ids of the actions (``len == n_actions``).

        Returns:
            The checked logged data.

        Raises:
            OPEInputError: a column has the wrong shape, a propensity is not in
                ``(0, 1]``, a probability not in ``[0, 1]``, a row of ``action_dist``
                does not sum to 1, ``target_pscore`` disagrees with ``action_dist``,
                or a value is NaN.

        Example:
            >>> LoggedBandit.build(action=[0], reward=[1.0], pscore=[0.0], n_actions=2)
            Traceback (most recent call last):
            ...
            recsys.ope.errors.OPEInputError: pscore: must be > 0 (a propensity of 0 \
cannot be reweighted); 1 rows (first: row 0) are <= 0
        """
        if int(n_actions) < 1:
            raise OPEInputError(f"n_actions: must be >= 1, got {n_actions}")
        rew = _as_1d("reward", reward, None).astype(np.float64)
        n = rew.shape[0]
        if n == 0:
            raise OPEInputError("reward: the log has no rows")
        if not np.isfinite(rew).all():
            raise OPEInputError(f"reward: NaN or infinite in {_rows(~np.isfinite(rew))}")
        act = _as_int("action", action, n, int(n_actions))
        ps = check_probabilities("pscore", _as_1d("pscore", pscore, n), positive=True)
        if position is None:
            pos = np.zeros(n, dtype=np.int64)
            n_pos = 1 if n_positions is None else int(n_positions)
        else:
            raw_pos = _as_1d("position", position, n)
            n_pos = int(np.max(raw_pos)) + 1 if n_positions is None else int(n_positions)
            pos = _as_int("position", raw_pos, n, max(n_pos, 1))
        if n_pos < 1:
            raise OPEInputError(f"n_positions: must be >= 1, got {n_pos}")
        ctx = None
        if context is not None:
            ctx = np.asarray(context, dtype=np.float64)
            if ctx.ndim == 1:
                ctx = ctx[:, None]
            if ctx.ndim != 2 or ctx.shape[0] != n:
                raise OPEInputError(f"context: expected shape ({n}, d), got {ctx.shape}")
            if not np.isfinite(ctx).all():
                raise OPEInputError("context: NaN or infinite values")
        ids = None
        if action_ids is not None:
            ids = tuple(action_ids)
            if len(ids) != int(n_actions):
                raise OPEInputError(f"action_ids: expected {n_actions} ids, got {len(ids)}")
        log = cls(
            action=act,
            reward=rew,
            pscore=ps,
            position=pos,
            n_actions=int(n_actions),
            n_positions=n_pos,
            context=ctx,
            action_ids=ids,
        )
        if action_dist is not None:
            log = log.with_candidate(action_dist)
        if target_pscore is not None:
            tp = check_probabilities("target_pscore", _as_1d("target_pscore", target_pscore, n))
            if log.target_pscore is not None and not np.allclose(
                tp, log.target_pscore, atol=PROBABILITY_SUM_TOLERANCE
            ):
                raise OPEInputError(
                    "target_pscore: disagrees with action_dist at the logged actions"
                )
            log = replace(log, target_pscore=tp)
        if reward_hat is not None:
            log = log.with_reward_model(reward_hat)
        return log

    @property
    def n_rounds(self) -> int:
        """The number of rows."""
        return int(self.reward.shape[0])

    def _check_matrix(self, name: str, values: npt.ArrayLike) -> FloatArray:
        arr = np.asarray(values, dtype=np.float64)
        want = (self.n_rounds, self.n_actions)
        if arr.shape != want:
            raise OPEInputError(f"{name}: expected shape {want} (rows, actions), got {arr.shape}")
        return arr

    def with_candidate(self, action_dist: npt.ArrayLike) -> LoggedBandit:
        """The log with a candidate policy's distribution attached.

        Args:
            action_dist: ``[n, n_actions]``: row ``i`` is the candidate's distribution
                over actions at row ``i``'s context and position; each row sums to 1.

        Returns:
            A copy with ``action_dist`` and ``target_pscore`` (its value at the logged
            actions) set.

        Raises:
            OPEInputError: wrong shape, a probability outside ``[0, 1]``, or a row
                whose sum is not 1.
        """
        dist = check_probabilities("action_dist", self._check_matrix("action_dist", action_dist))
        sums = dist.sum(axis=1)
        off = np.abs(sums - 1.0) > PROBABILITY_SUM_TOLERANCE
        if off.any():
            raise OPEInputError(
                f"action_dist: each row must sum to 1 over the actions; {_rows(off)} do not "
                f"(first sum {float(sums[off][0]):.6g})"
            )
        target = dist[np.arange(self.n_rounds), self.action]
        return replace(self, action_dist=dist, target_pscore=target)

    def with_target_pscore(self, target_pscore: npt.ArrayLike) -> LoggedBandit:
        """The log with only the candidate's probability of each logged action (IPS/SNIPS).

        Args:
            target_pscore: one probability in ``[0, 1]`` per row.

        Returns:
            A copy with ``target_pscore`` set and no ``action_dist``.
        """
        tp = check_probabilities(
            "target_pscore", _as_1d("target_pscore", target_pscore, self.n_rounds)
        )
        return replace(self, target_pscore=tp, action_dist=None)

    def with_reward_model(self, reward_hat: npt.ArrayLike) -> LoggedBandit:
        """The log with a reward model's predictions attached.

        Args:
            reward_hat: ``[n, n_actions]`` predicted reward of every action at each
                row's context and position (finite).

        Returns:
            A copy with ``reward_hat`` set.
        """
        pred = self._check_matrix("reward_hat", reward_hat)
        if not np.isfinite(pred).all():
            bad = np.asarray(~np.isfinite(pred).all(axis=1), dtype=np.bool_)
            raise OPEInputError(f"reward_hat: NaN or infinite in {_rows(bad)}")
        return replace(self, reward_hat=pred)

    def take(self, rows: npt.ArrayLike) -> LoggedBandit:
        """The rows ``rows`` (indices, repeats allowed: a bootstrap resample).

        Args:
            rows: integer row indices.

        Returns:
            A log of those rows, with the same action and position counts.
        """
        idx = np.asarray(rows, dtype=np.int64)

        def pick(a: npt.NDArray[Any] | None) -> Any:
            return None if a is None else a[idx]

        return replace(
            self,
            action=self.action[idx],
            reward=self.reward[idx],
            pscore=self.pscore[idx],
            position=self.position[idx],
            context=pick(self.context),
            target_pscore=pick(self.target_pscore),
            action_dist=pick(self.action_dist),
            reward_hat=pick(self.reward_hat),
        )

    def on_policy_value(self) -> float:
        """The logging policy's own value on this log: the mean reward per row."""
        return float(self.reward.mean())

    def importance_weights(self) -> FloatArray:
        """``target_pscore / pscore`` per row.

        Raises:
            OPEInputError: no candidate is attached.
        """
        if self.target_pscore is None:
            raise OPEInputError(
                "target_pscore: no candidate policy attached (with_candidate or with_target_pscore)"
            )
        return self.target_pscore / self.pscore
