"""Contextual bandits over a few arms: LinUCB, linear Thompson sampling, and baselines.

Each arm keeps a ridge regression of reward on the context vector (``A = lambda I +
sum x x^T``, ``b = sum r x``), updated in O(d^2) per observation with a Sherman-Morrison
step on ``A^-1``. With ``discount`` ``gamma < 1`` an arm's past observations fade at
each of its updates (``A <- gamma A + (1 - gamma) lambda I + x x^T``, ``b <- gamma b +
r x``: an effective memory of about ``1 / (1 - gamma)`` plays), so the estimates follow
rewards that drift; the prior term keeps ``A`` well conditioned. The policies differ in
how they choose:

* :class:`LinUCB`: the arm with the highest ``theta^T x + alpha sqrt(x^T A^-1 x)`` (Li et
  al., 2010, disjoint model); deterministic, propensity 1 (ties: the lowest arm);
* :class:`LinearThompson`: the arm whose ``theta~ ~ N(theta, v^2 A^-1)`` draw scores
  highest (Agrawal and Goyal, 2013); its propensity is estimated by drawing again
  ``propensity_draws`` times;
* :class:`EpsilonGreedy` over the ridge estimates (exact propensities), and
  :class:`Uniform` (1 / K each), the baselines. ``EpsilonGreedy(epsilon=0)`` is greedy.

Every policy reports the probability with which it chose its arm, so the choices it
logs can be evaluated off-policy. State is a plain dict (:meth:`LinearBandit.to_dict`,
:meth:`LinearBandit.from_dict`) carrying a format version, so it can be persisted and
restored after a restart (:mod:`recsys.bandits.state`).

Example:
    >>> bandit = LinUCB(n_arms=3, dim=2, alpha=1.0)
    >>> choice = bandit.select(np.array([1.0, 0.0]), np.random.default_rng(0))
    >>> bandit.update(choice.arm, np.array([1.0, 0.0]), 1.0)
    >>> choice.propensity
    1.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

STATE_FORMAT = 1


@dataclass(frozen=True)
class Choice:
    """An arm chosen for one context, with the probability of choosing it."""

    arm: int
    propensity: float
    scores: np.ndarray


def check_context(x: np.ndarray, dim: int) -> np.ndarray:
    """``x`` as a float64 vector of ``dim`` finite values (ValueError otherwise).

    Example:
        >>> check_context([1, 0], 2)
        array([1., 0.])
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.shape != (dim,):
        raise ValueError(f"context has {x.size} values, the bandit {dim}")
    if not np.isfinite(x).all():
        raise ValueError("context holds NaN or infinity")
    return x


def check_observation(arm: int, reward: float, n_arms: int) -> None:
    """An update's arm and reward: ``arm`` in ``0..n_arms-1``, ``reward`` finite
    (ValueError otherwise).

    Example:
        >>> check_observation(1, 0.5, 2)
    """
    if not 0 <= arm < n_arms:
        raise ValueError(f"arm {arm} is not in 0..{n_arms - 1}")
    if not np.isfinite(reward):
        raise ValueError(f"reward must be finite, got {reward}")


class LinearBandit:
    """Per-arm ridge regressions of reward on the context (the shared state).

    Args:
        n_arms: number of arms.
        dim: context vector length.
        reg: ridge strength ``lambda`` (the prior precision).
        discount: weight ``gamma`` of an arm's past at each of its updates (1: none).
    """

    kind: ClassVar[str] = "linear"

    def __init__(self, n_arms: int, dim: int, reg: float = 1.0, discount: float = 1.0) -> None:
        if n_arms < 1 or dim < 1:
            raise ValueError(f"n_arms and dim must be >= 1, got {n_arms} and {dim}")
        if not reg > 0:
            raise ValueError(f"reg must be > 0, got {reg}")
        if not 0 < discount <= 1:
            raise ValueError(f"discount must be in (0, 1], got {discount}")
        self.n_arms, self.dim, self.reg, self.discount = n_arms, dim, reg, discount
        self.a_inv = np.repeat(np.eye(dim)[None] / reg, n_arms, axis=0)
        self.b = np.zeros((n_arms, dim))
        self.counts = np.zeros(n_arms, dtype=np.int64)
        self.version = 0

    @property
    def theta(self) -> np.ndarray:
        """``[K, d]`` ridge estimates."""
        return np.einsum("kij,kj->ki", self.a_inv, self.b)

    def _check(self, x: np.ndarray) -> np.ndarray:
        return check_context(x, self.dim)

    def update(
        self, arm: int, x: np.ndarray, reward: float, propensity: float | None = None
    ) -> None:
        """Adds one observation of ``arm`` (Sherman-Morrison on ``A^-1``).

        Args:
            arm: the arm shown.
            x: its context.
            reward: the reward observed.
            propensity: the probability the arm was chosen with. The ridge model of an
                arm fits that arm's rewards, which needs no weighting, so it is unused;
                accepted because every bandit's ``update`` takes what the log holds
                (:class:`~recsys.bandits.vw.VowpalWabbitBandit` learns with it).
        """
        x = self._check(x)
        check_observation(arm, reward, self.n_arms)
        if self.discount < 1.0:
            g = self.discount
            a = g * np.linalg.inv(self.a_inv[arm]) + (1 - g) * self.reg * np.eye(self.dim)
            self.a_inv[arm] = np.linalg.inv(a + np.outer(x, x))
            self.b[arm] = g * self.b[arm] + reward * x
        else:
            a_inv = self.a_inv[arm]
            ax = a_inv @ x
            self.a_inv[arm] = a_inv - np.outer(ax, ax) / (1.0 + x @ ax)
            self.b[arm] += reward * x
        self.counts[arm] += 1
        self.version += 1

    def select(self, x: np.ndarray, rng: np.random.Generator) -> Choice:
        raise NotImplementedError

    # -- state -----------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        return {}

    def to_dict(self) -> dict[str, Any]:
        """The bandit's whole state (JSON-serializable)."""
        return {
            "format": STATE_FORMAT,
            "kind": self.kind,
            "n_arms": self.n_arms,
            "dim": self.dim,
            "reg": self.reg,
            "discount": self.discount,
            "params": self.params(),
            "a_inv": self.a_inv.tolist(),
            "b": self.b.tolist(),
            "counts": self.counts.tolist(),
            "version": self.version,
        }

    @staticmethod
    def from_dict(state: dict[str, Any]) -> LinearBandit:
        """A bandit restored from :meth:`to_dict` (any of the kinds here).

        Raises:
            ValueError: an unknown format or kind, or arrays of the wrong shape.
        """
        if state.get("format") != STATE_FORMAT:
            raise ValueError(
                f"bandit state format {state.get('format')!r}, expected {STATE_FORMAT}"
            )
        kinds: dict[str, type[LinearBandit]] = {
            c.kind: c for c in (LinUCB, LinearThompson, EpsilonGreedy, Uniform)
        }
        cls = kinds.get(str(state.get("kind")))
        if cls is None:
            raise ValueError(f"unknown bandit kind {state.get('kind')!r}; known {sorted(kinds)}")
        bandit = cls(int(state["n_arms"]), int(state["dim"]), reg=float(state["reg"]),
                     discount=float(state.get("discount", 1.0)),
                     **state.get("params", {}))  # fmt: skip
        a_inv = np.asarray(state["a_inv"], dtype=np.float64)
        b = np.asarray(state["b"], dtype=np.float64)
        if a_inv.shape != bandit.a_inv.shape or b.shape != bandit.b.shape:
            raise ValueError("bandit state arrays do not match n_arms and dim")
        bandit.a_inv, bandit.b = a_inv, b
        bandit.counts = np.asarray(state["counts"], dtype=np.int64)
        bandit.version = int(state["version"])
        return bandit


class LinUCB(LinearBandit):
    """LinUCB (see the module docstring).

    Args:
        alpha: width of the confidence bonus.
    """

    kind = "linucb"

    def __init__(
        self, n_arms: int, dim: int, reg: float = 1.0, alpha: float = 1.0, discount: float = 1.0
    ) -> None:
        super().__init__(n_arms, dim, reg, discount)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = alpha

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def select(self, x: np.ndarray, rng: np.random.Generator) -> Choice:
        x = self._check(x)
        mean = self.theta @ x
        width = np.sqrt(np.maximum(np.einsum("i,kij,j->k", x, self.a_inv, x), 0.0))
        scores = mean + self.alpha * width
        return Choice(int(np.argmax(scores)), 1.0, scores)


class LinearThompson(LinearBandit):
    """Linear Thompson sampling (see the module docstring).

    Args:
        noise: scale ``v`` of the posterior draws.
        propensity_draws: draws that estimate the chosen arm's probability.
    """

    kind = "linear_ts"

    def __init__(
        self, n_arms: int, dim: int, reg: float = 1.0, noise: float = 0.5,
        propensity_draws: int = 200, discount: float = 1.0,
    ) -> None:  # fmt: skip
        super().__init__(n_arms, dim, reg, discount)
        if not noise > 0 or propensity_draws < 1:
            raise ValueError("noise must be > 0 and propensity_draws >= 1")
        self.noise, self.propensity_draws = noise, propensity_draws

    def params(self) -> dict[str, Any]:
        return {"noise": self.noise, "propensity_draws": self.propensity_draws}

    def _draw_scores(self, x: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
        # x^T theta~ ~ N(x^T theta, v^2 x^T A^-1 x): one draw per arm and sample
        mean = self.theta @ x
        sd = self.noise * np.sqrt(np.maximum(np.einsum("i,kij,j->k", x, self.a_inv, x), 0.0))
        return mean[None, :] + sd[None, :] * rng.standard_normal((n, self.n_arms))

    def select(self, x: np.ndarray, rng: np.random.Generator) -> Choice:
        x = self._check(x)
        scores = self._draw_scores(x, rng, 1)[0]
        arm = int(np.argmax(scores))
        again = np.argmax(self._draw_scores(x, rng, self.propensity_draws), axis=1)
        # the estimate is never 0 for the arm that was just drawn
        propensity = (np.sum(again == arm) + 1.0) / (self.propensity_draws + 1.0)
        return Choice(arm, float(propensity), scores)


class EpsilonGreedy(LinearBandit):
    """Greedy on the ridge estimates, a uniform arm with probability ``epsilon``."""

    kind = "epsilon_greedy"

    def __init__(
        self, n_arms: int, dim: int, reg: float = 1.0, epsilon: float = 0.1, discount: float = 1.0
    ) -> None:
        super().__init__(n_arms, dim, reg, discount)
        if not 0 <= epsilon <= 1:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.epsilon = epsilon

    def params(self) -> dict[str, Any]:
        return {"epsilon": self.epsilon}

    def select(self, x: np.ndarray, rng: np.random.Generator) -> Choice:
        x = self._check(x)
        scores = self.theta @ x
        best = int(np.argmax(scores))
        arm = int(rng.integers(self.n_arms)) if rng.random() < self.epsilon else best
        p = self.epsilon / self.n_arms + (1 - self.epsilon) * (arm == best)
        return Choice(arm, float(p), scores)


class Uniform(LinearBandit):
    """Every arm with probability ``1 / K`` (it still learns, for comparisons)."""

    kind = "uniform"

    def select(self, x: np.ndarray, rng: np.random.Generator) -> Choice:
        x = self._check(x)
        return Choice(int(rng.integers(self.n_arms)), 1.0 / self.n_arms, self.theta @ x)


def make_bandit(name: str, n_arms: int, dim: int, **params: Any) -> LinearBandit:
    """A bandit by name: ``linucb``, ``linear_ts``, ``epsilon_greedy``, ``greedy``, ``uniform``."""
    if name == "greedy":
        return EpsilonGreedy(n_arms, dim, epsilon=0.0, **params)
    kinds: dict[str, type[LinearBandit]] = {
        c.kind: c for c in (LinUCB, LinearThompson, EpsilonGreedy, Uniform)
    }
    if name not in kinds:
        raise ValueError(f"unknown bandit {name!r}; known {sorted([*kinds, 'greedy'])}")
    return kinds[name](n_arms, dim, **params)
