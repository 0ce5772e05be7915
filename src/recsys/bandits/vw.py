"""Vowpal Wabbit's contextual-bandit reductions behind the bandits' interface.

:class:`VowpalWabbitBandit` wraps a ``vowpalwabbit.Workspace`` running
``--cb_explore_adf`` (action-dependent features): each round is one shared line holding
the context vector (namespace ``s``, one feature per non-zero slot) and one line per arm
(namespace ``a``, the arm index as a categorical feature), with the quadratic
interactions ``-q sa`` so that every arm gets its own weights on the context (the
contextual model; without them the arms would differ by a constant only). VW returns a
probability mass function over the arms, shaped by the exploration:

* ``epsilon``: epsilon-greedy around the learnt costs (VW's default, ``epsilon`` 0.05);
* ``squarecb``: SquareCB (Foster and Rakhlin, 2020), inverse-gap weighting whose
  greediness grows as ``gamma_scale * t ** gamma_exponent``;
* ``bag``: bootstrap Thompson sampling over ``bag`` online-bagged regressors;
* ``cover``: online cover, ``cover`` policies trained to be diverse (``psi``).

The defaults are VW's. Two of them explore badly on a small problem
(tests/bandits/test_vw.py): bagging alone (VW's ``epsilon`` 0 for it) lets every bag
settle on the first arm that paid anything, so give it an ``epsilon``; cover with ``psi``
1 keeps much of the mass off the best arm (``psi`` 0.1 does not).

:meth:`VowpalWabbitBandit.select` draws an arm from that PMF with the caller's
generator and reports its probability, so its logs can be evaluated off-policy.
:meth:`VowpalWabbitBandit.update` teaches VW ``arm:cost:probability`` with ``cost =
-reward`` (VW minimizes costs). The propensity VW learns with is the one the arm was
chosen with: passed explicitly, else remembered from the last :meth:`select` of the same
context and arm, else the current PMF's (a log replayed later).

The ``vowpalwabbit`` package is imported when a bandit is built, so this module imports
without it (pinned in requirements/common.txt). Unlike the ridge bandits of
:mod:`recsys.bandits.linear` its state is VW's model, not a plain dict: it is not
persisted by :mod:`recsys.bandits.state`.

Example:
    >>> bandit = VowpalWabbitBandit(n_arms=3, dim=2, exploration="squarecb", seed=0)
    >>> x = np.array([1.0, 0.0])
    >>> choice = bandit.select(x, np.random.default_rng(0))
    >>> bandit.update(choice.arm, x, 1.0)
    >>> round(float(choice.scores.sum()), 6)
    1.0
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from recsys.bandits.linear import Choice, check_context, check_observation

EXPLORATIONS: tuple[str, ...] = ("epsilon", "squarecb", "bag", "cover")

# VW refuses a zero probability in a label; a logged arm the current PMF never picks
MIN_PROPENSITY = 1e-6


class VowpalWabbitBandit:
    """A contextual bandit learnt by VW's ``--cb_explore_adf`` (see the module docstring).

    It has the interface :func:`recsys.sim.slot_bandit.run_slot`,
    :class:`recsys.bandits.online.BanditUpdater` and the serving policy use: ``n_arms``,
    ``dim``, ``version``, ``counts``, ``select(x, rng)`` and ``update(arm, x, reward)``.

    Args:
        n_arms: number of arms.
        dim: context vector length.
        exploration: ``epsilon``, ``squarecb``, ``bag`` or ``cover``.
        epsilon: uniform exploration share (``epsilon``; also mixed into ``bag`` and
            ``cover`` when given).
        gamma_scale: SquareCB's ``gamma`` scale (``squarecb``).
        gamma_exponent: SquareCB's ``gamma`` exponent of the round count (``squarecb``).
        bag: number of bagged policies (``bag``).
        cover: number of cover policies (``cover``).
        psi: cover's diversity weight (``cover``).
        learning_rate: VW's ``-l`` (None: VW's default, 0.5).
        cb_type: VW's cost estimator for learning (``mtr``, ``dr``, ``ips``, ...).
        seed: VW's ``--random_seed`` (bagging's bootstrap weights).
        extra_args: more VW arguments, appended as they are.

    Raises:
        ValueError: bad sizes, an unknown exploration or out-of-range parameters.
        ImportError: ``vowpalwabbit`` is not installed.

    Example:
        >>> bandit = VowpalWabbitBandit(n_arms=2, dim=3, exploration="epsilon", epsilon=0.1)
        >>> bandit.args  # doctest: +ELLIPSIS
        '--cb_explore_adf --quiet -q sa --random_seed 0 --cb_type mtr --epsilon 0.1'
    """

    kind: ClassVar[str] = "vw"

    def __init__(
        self,
        n_arms: int,
        dim: int,
        exploration: str = "epsilon",
        epsilon: float | None = None,
        gamma_scale: float = 10.0,
        gamma_exponent: float = 0.5,
        bag: int = 5,
        cover: int = 5,
        psi: float = 1.0,
        learning_rate: float | None = None,
        cb_type: str = "mtr",
        seed: int = 0,
        extra_args: str = "",
    ) -> None:
        if n_arms < 1 or dim < 1:
            raise ValueError(f"n_arms and dim must be >= 1, got {n_arms} and {dim}")
        if exploration not in EXPLORATIONS:
            raise ValueError(f"unknown exploration {exploration!r}; known {EXPLORATIONS}")
        if epsilon is not None and not 0 <= epsilon <= 1:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        if not gamma_scale > 0 or gamma_exponent < 0:
            raise ValueError("gamma_scale must be > 0 and gamma_exponent >= 0")
        if bag < 1 or cover < 1 or psi < 0:
            raise ValueError("bag and cover must be >= 1, psi >= 0")
        if learning_rate is not None and not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
        self.n_arms, self.dim, self.exploration = n_arms, dim, exploration
        self.epsilon = 0.05 if epsilon is None and exploration == "epsilon" else epsilon
        self.gamma_scale, self.gamma_exponent = gamma_scale, gamma_exponent
        self.bag, self.cover, self.psi = bag, cover, psi
        self.learning_rate, self.cb_type, self.seed = learning_rate, cb_type, seed
        self.extra_args = extra_args
        self.args = self._args()
        from vowpalwabbit import Workspace  # lazy: the package imports without VW

        self._ws: Any = Workspace(self.args)
        self._actions = [f"|a a{k}" for k in range(n_arms)]
        self._last: tuple[bytes, int, float] | None = None
        self.counts = np.zeros(n_arms, dtype=np.int64)
        self.version = 0

    def _args(self) -> str:
        parts = [f"--cb_explore_adf --quiet -q sa --random_seed {self.seed}"]
        parts.append(f"--cb_type {self.cb_type}")
        if self.learning_rate is not None:
            parts.append(f"-l {self.learning_rate:g}")
        if self.exploration == "squarecb":
            parts.append(
                f"--squarecb --gamma_scale {self.gamma_scale:g} "
                f"--gamma_exponent {self.gamma_exponent:g}"
            )
        elif self.exploration == "bag":
            parts.append(f"--bag {self.bag}")
        elif self.exploration == "cover":
            parts.append(f"--cover {self.cover} --psi {self.psi:g}")
        if self.epsilon is not None and self.exploration != "squarecb":
            parts.append(f"--epsilon {self.epsilon:g}")
        if self.extra_args:
            parts.append(self.extra_args)
        return " ".join(parts)

    def params(self) -> dict[str, Any]:
        """The constructor's arguments (other than ``n_arms`` and ``dim``)."""
        return {
            "exploration": self.exploration, "epsilon": self.epsilon,
            "gamma_scale": self.gamma_scale, "gamma_exponent": self.gamma_exponent,
            "bag": self.bag, "cover": self.cover, "psi": self.psi,
            "learning_rate": self.learning_rate, "cb_type": self.cb_type, "seed": self.seed,
            "extra_args": self.extra_args,
        }  # fmt: skip

    def _check(self, x: np.ndarray) -> np.ndarray:
        return check_context(x, self.dim)

    @staticmethod
    def _shared(x: np.ndarray) -> str:
        feats = " ".join(
            f"f{i}" if v == 1.0 else f"f{i}:{v:.9g}" for i, v in enumerate(x.tolist()) if v != 0.0
        )
        return f"shared |s {feats}"

    def pmf(self, x: np.ndarray) -> np.ndarray:
        """VW's probability of each arm for context ``x`` (sums to 1)."""
        x = self._check(x)
        return self._pmf(self._shared(x))

    def _pmf(self, shared: str) -> np.ndarray:
        p = np.asarray(self._ws.predict([shared, *self._actions]), dtype=np.float64)
        return p / p.sum()

    def select(self, x: np.ndarray, rng: np.random.Generator) -> Choice:
        """An arm drawn from VW's PMF; its propensity is the PMF's value (``scores``: the
        PMF)."""
        x = self._check(x)
        p = self._pmf(self._shared(x))
        arm = min(int(np.searchsorted(np.cumsum(p), rng.random(), side="right")), self.n_arms - 1)
        while p[arm] <= 0:  # rounding at the top of the cumulative sum
            arm -= 1
        self._last = (x.tobytes(), arm, float(p[arm]))
        return Choice(arm, float(p[arm]), p)

    def update(
        self, arm: int, x: np.ndarray, reward: float, propensity: float | None = None
    ) -> None:
        """Teaches VW that ``arm`` got ``reward`` in context ``x`` (cost ``-reward``).

        Args:
            arm: the arm shown.
            x: its context.
            reward: the reward observed.
            propensity: the probability the arm was chosen with (None: the last
                :meth:`select`'s for this context and arm, else the current PMF's).
        """
        x = self._check(x)
        check_observation(arm, reward, self.n_arms)
        shared = self._shared(x)
        if propensity is None:
            last = self._last
            if last is not None and last[1] == arm and last[0] == x.tobytes():
                propensity = last[2]
            else:
                propensity = float(self._pmf(shared)[arm])
        if not 0 <= propensity <= 1:
            raise ValueError(f"propensity must be in [0, 1], got {propensity}")
        p = max(propensity, MIN_PROPENSITY)
        lines = [shared, *self._actions]
        lines[1 + arm] = f"{arm}:{-float(reward):.9g}:{p:.9g} {self._actions[arm]}"
        self._ws.learn(lines)
        self._last = None
        self.counts[arm] += 1
        self.version += 1

    def close(self) -> None:
        """Releases VW's workspace (the bandit is unusable afterwards)."""
        self._ws.finish()
