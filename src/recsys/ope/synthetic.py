"""Synthetic contextual bandits whose policies' true values are known exactly.

A problem fixes a finite population of contexts ``x_m`` (``m < n_contexts``, Gaussian
features), a true reward function with known parameters, and a logging policy. A log
draws contexts uniformly from the population, an action from the logging policy and a
reward from the truth. Because the population is finite, a policy's true value is an
exact finite sum, not a Monte Carlo estimate:

    V(pi) = (1 / M) sum_m sum_a pi(a | x_m) q(x_m, a)

* reward ``logistic``: click with probability ``q = sigmoid(x . theta_a + b_a + offset)``;
  ``linear``: ``r = x . theta_a + b_a + N(0, noise_std^2)``, ``q`` its mean.
* logging policy: softmax over a *noisy* score, ``(s(x, a) + eps_{x,a}) / T`` with
  ``s = x . theta_a + b_a`` and a fixed ``eps ~ N(0, logging_noise^2)`` per context
  and action (a production model that knows the truth imperfectly); every action has
  positive probability, as the estimators need.
* candidates (:meth:`SyntheticBandit.candidates`): ``near`` mixes 80 % of the logger
  with 20 % of a sharper softmax over the true score; ``far`` is that sharper softmax
  alone; ``uniform`` picks uniformly.

Example:
    >>> problem = SyntheticBandit(SyntheticBanditConfig(n_actions=4, dim=3, seed=1))
    >>> pi = problem.candidates()["far"]
    >>> sample = problem.sample(2000, seed=0, candidate=pi)
    >>> round(problem.true_value(pi), 3) > round(problem.true_value(problem.logging), 3)
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recsys.ope.errors import OPEInputError
from recsys.ope.logged import FloatArray, IntArray, LoggedBandit

REWARD_KINDS: tuple[str, ...] = ("logistic", "linear")


@dataclass(frozen=True)
class SyntheticBanditConfig:
    """A synthetic problem.

    Attributes:
        n_actions: actions per context.
        dim: context features.
        n_contexts: size of the context population.
        reward: ``logistic`` (clicks) or ``linear`` (Gaussian noise).
        reward_offset: added to the logistic score (sets the base click rate).
        noise_std: the linear reward's noise.
        logging_temperature: the logging softmax's temperature.
        logging_noise: the std of the logger's fixed score noise.
        candidate_temperature: the temperature of the sharper softmax over the true
            score that ``near`` and ``far`` use.
        near_mix: the sharper softmax's share in ``near``.
        seed: the seed of the parameters, contexts and logger noise.
    """

    n_actions: int = 10
    dim: int = 5
    n_contexts: int = 5000
    reward: str = "logistic"
    reward_offset: float = -1.0
    noise_std: float = 0.5
    logging_temperature: float = 1.0
    logging_noise: float = 1.0
    candidate_temperature: float = 0.3
    near_mix: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.reward not in REWARD_KINDS:
            raise OPEInputError(f"reward: expected one of {REWARD_KINDS}, got {self.reward!r}")
        if min(self.n_actions, self.dim, self.n_contexts) < 1:
            raise OPEInputError("n_actions, dim and n_contexts must be >= 1")
        if self.logging_temperature <= 0 or self.candidate_temperature <= 0:
            raise OPEInputError("temperatures must be > 0")
        if not 0.0 <= self.near_mix <= 1.0:
            raise OPEInputError(f"near_mix: must be in [0, 1], got {self.near_mix}")


def softmax(logits: npt.ArrayLike, temperature: float = 1.0) -> FloatArray:
    """Row-wise softmax of ``logits / temperature``.

    Example:
        >>> softmax([[0.0, 0.0]]).tolist()
        [[0.5, 0.5]]
    """
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)  # no overflow for sharp temperatures
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


@dataclass(frozen=True)
class SyntheticSample:
    """A log drawn from a :class:`SyntheticBandit`.

    Attributes:
        log: the logged data (context features attached; the candidate if given).
        context_index: each row's context in the population.
    """

    log: LoggedBandit
    context_index: IntArray


class SyntheticBandit:
    """A contextual bandit with known parameters, logging policy and exact policy values.

    Args:
        config: the problem.

    Attributes:
        contexts: ``[M, d]`` the context population.
        expected_reward: ``[M, K]`` the true ``q(x, a)``.
        logging: ``[M, K]`` the logging policy's distribution.
    """

    def __init__(self, config: SyntheticBanditConfig | None = None) -> None:
        self.config = cfg = config or SyntheticBanditConfig()
        rng = np.random.default_rng(cfg.seed)
        self.contexts: FloatArray = rng.normal(size=(cfg.n_contexts, cfg.dim))
        self.theta: FloatArray = rng.normal(
            scale=1.0 / np.sqrt(cfg.dim), size=(cfg.n_actions, cfg.dim)
        )
        self.bias: FloatArray = rng.normal(scale=0.5, size=cfg.n_actions)
        self.score: FloatArray = self.contexts @ self.theta.T + self.bias
        if cfg.reward == "logistic":
            self.expected_reward: FloatArray = 1.0 / (
                1.0 + np.exp(-(self.score + cfg.reward_offset))
            )
        else:
            self.expected_reward = self.score.copy()
        noise = rng.normal(scale=cfg.logging_noise, size=self.score.shape)
        self.logging: FloatArray = softmax(self.score + noise, cfg.logging_temperature)

    def candidates(self) -> dict[str, FloatArray]:
        """The candidate policies over the population (``[M, K]`` each).

        Returns:
            ``logging``, ``near``, ``far`` and ``uniform``.
        """
        cfg = self.config
        sharp = softmax(self.score, cfg.candidate_temperature)
        near = (1.0 - cfg.near_mix) * self.logging + cfg.near_mix * sharp
        uniform = np.full_like(self.logging, 1.0 / cfg.n_actions)
        return {"logging": self.logging, "near": near, "far": sharp, "uniform": uniform}

    def true_value(self, policy: FloatArray) -> float:
        """The exact value of ``policy`` (``[M, K]``): its mean true reward over the population."""
        if policy.shape != self.expected_reward.shape:
            raise OPEInputError(
                f"policy: expected shape {self.expected_reward.shape}, got {policy.shape}"
            )
        return float(np.mean(np.sum(policy * self.expected_reward, axis=1)))

    def sample(self, n: int, *, seed: int, candidate: FloatArray | None = None) -> SyntheticSample:
        """A log of ``n`` rounds of the logging policy.

        Args:
            n: rounds.
            seed: the seed of contexts, actions and rewards.
            candidate: ``[M, K]`` a policy to attach as the candidate.

        Returns:
            The log and each row's context index.
        """
        if n < 1:
            raise OPEInputError(f"n: must be >= 1, got {n}")
        cfg = self.config
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, cfg.n_contexts, size=n)
        probs = self.logging[idx]
        # inverse-CDF sampling of one action per row; the clip guards float round-off
        cdf = np.cumsum(probs, axis=1)
        action = (cdf < rng.random(n)[:, None] * cdf[:, -1:]).sum(axis=1)
        action = np.minimum(action, cfg.n_actions - 1)
        q = self.expected_reward[idx, action]
        if cfg.reward == "logistic":
            reward = (rng.random(n) < q).astype(np.float64)
        else:
            reward = q + rng.normal(scale=cfg.noise_std, size=n)
        log = LoggedBandit.build(
            action=action,
            reward=reward,
            pscore=probs[np.arange(n), action],
            n_actions=cfg.n_actions,
            context=self.contexts[idx],
        )
        if candidate is not None:
            log = log.with_candidate(candidate[idx])
        return SyntheticSample(log=log, context_index=idx.astype(np.int64))

    def oracle_reward_model(self, sample: SyntheticSample) -> FloatArray:
        """``[n, K]`` the true expected rewards of the sample's rows (a perfect model)."""
        return self.expected_reward[sample.context_index]
