"""Slate policies: which ranked candidates a request shows, and with what probability.

The recommender ranks candidates (relevance, then MMR); a policy turns the first
``depth`` of that ranking into the list shown. Every policy reports, for the slate it
chose, the exact probabilities the exposure log needs for off-policy evaluation:

* ``propensities[p]``: the probability of choosing the item shown at position ``p``
  given the items above it (the sequential choice probability);
* ``slate_propensity``: the probability of the whole ordered slate (their product);
* ``position_propensities[p]``: the marginal probability that the item shown at ``p``
  is at ``p`` at all, where it has a closed form (None otherwise).

Policies (:func:`parse_policy` reads ``name`` or ``name:parameter``):

* ``deterministic``: the ranking's top ``k``; every probability is 1.
* ``epsilon_greedy:EPS``: with probability ``1 - EPS`` the ranking's top ``k``, else
  ``k`` items drawn uniformly without replacement from the first ``depth``, in random
  order. Marginal of item ``i`` at ``p``: ``(1 - EPS) [top has i at p] + EPS / depth``.
* ``plackett_luce:T``: positions filled one at a time, each by a draw among the items
  left with probability ``softmax(score / T)`` (scores are the list's relevance); lower
  ``T`` follows the ranking more closely. Marginals have no closed form (None).

Draws come from a generator seeded by the request id (:func:`request_rng`), so the same
request id always gets the same slate, in the server and in an offline replay.

Numpy and the standard library only (the module runs inside Triton's python backend).

Example:
    >>> policy = parse_policy("epsilon_greedy:0.2")
    >>> slate = policy.choose(np.array([3.0, 2.0, 1.0, 0.0]), 2, request_rng("r-1"))
    >>> len(slate.order), 0.0 < slate.slate_propensity <= 1.0
    (2, True)
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

DETERMINISTIC = "deterministic"
EPSILON_GREEDY = "epsilon_greedy"
PLACKETT_LUCE = "plackett_luce"
POLICIES = (DETERMINISTIC, EPSILON_GREEDY, PLACKETT_LUCE)


@dataclass(frozen=True)
class Slate:
    """A policy's choice for one request.

    Attributes:
        order: indices into the ranked candidates, in shown order.
        propensities: sequential choice probability of each shown item.
        slate_propensity: probability of the ordered slate.
        position_propensities: marginal probability of each shown item at its position,
            or None where the policy has no closed form.
    """

    order: np.ndarray
    propensities: np.ndarray
    slate_propensity: float
    position_propensities: np.ndarray | None


def request_rng(request_id: str) -> np.random.Generator:
    """A generator seeded by the request id (the same id draws the same slate)."""
    digest = hashlib.sha256(request_id.encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


@dataclass(frozen=True)
class SlatePolicy:
    """A slate policy (see the module docstring).

    Attributes:
        name: one of :data:`POLICIES`.
        parameter: epsilon (``epsilon_greedy``) or temperature (``plackett_luce``).
        depth: how many of the ranked candidates the policy may show (at least ``k``).
    """

    name: str = DETERMINISTIC
    parameter: float = 0.0
    depth: int = 50

    def __post_init__(self) -> None:
        if self.name not in POLICIES:
            raise ValueError(f"unknown policy {self.name!r}; expected one of {list(POLICIES)}")
        if self.name == EPSILON_GREEDY and not 0.0 <= self.parameter <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.parameter}")
        if self.name == PLACKETT_LUCE and not (
            self.parameter > 0 and math.isfinite(self.parameter)
        ):
            raise ValueError(f"the temperature must be > 0, got {self.parameter}")
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")

    @property
    def id(self) -> str:
        """The policy id the exposure log records (``name`` or ``name:parameter@depth``)."""
        if self.name == DETERMINISTIC:
            return DETERMINISTIC
        return f"{self.name}:{self.parameter:g}@{self.depth}"

    @property
    def stochastic(self) -> bool:
        return self.name != DETERMINISTIC and self.parameter > 0

    def pool_size(self, k: int) -> int:
        """How many ranked candidates a request of ``k`` needs."""
        return k if not self.stochastic else max(k, self.depth)

    def choose(self, scores: np.ndarray, k: int, rng: np.random.Generator) -> Slate:
        """The slate of ``k`` (at most the candidates) from ranked candidates.

        Args:
            scores: ``[m]`` the ranked candidates' scores, best first (their order is
                the ranking; ``plackett_luce`` also reads the values).
            k: slate length.
            rng: the request's generator (:func:`request_rng`).
        """
        m = min(len(scores), self.pool_size(k))
        k = min(k, m)
        if not self.stochastic or k == 0:
            ones = np.ones(k)
            return Slate(np.arange(k), ones, 1.0, ones.copy())
        if self.name == EPSILON_GREEDY:
            return self._epsilon_greedy(k, m, rng)
        return self._plackett_luce(np.asarray(scores[:m], dtype=np.float64), k, rng)

    def _epsilon_greedy(self, k: int, m: int, rng: np.random.Generator) -> Slate:
        eps = self.parameter
        explore = bool(rng.random() < eps)
        order = rng.choice(m, size=k, replace=False) if explore else np.arange(k)
        top = np.arange(k)
        # P(uniform draw gives this ordered slate) = (m - k)! / m!
        uniform_slate = math.exp(math.lgamma(m - k + 1) - math.lgamma(m + 1))
        slate = (1 - eps) * float(np.array_equal(order, top)) + eps * uniform_slate
        props = _sequential(order, k, m, eps)
        marginal = eps / m + (1 - eps) * (order == top)
        return Slate(order.astype(np.int64), props, float(slate), marginal.astype(np.float64))

    def _plackett_luce(self, scores: np.ndarray, k: int, rng: np.random.Generator) -> Slate:
        logits = (scores - scores.max()) / self.parameter
        weights = np.exp(logits)
        left = np.ones(len(scores), dtype=bool)
        order = np.empty(k, dtype=np.int64)
        props = np.empty(k)
        for p in range(k):
            w = np.where(left, weights, 0.0)
            total = w.sum()
            pick = int(rng.choice(len(w), p=w / total))
            order[p], props[p] = pick, w[pick] / total
            left[pick] = False
        return Slate(order, props, float(np.prod(props)), None)


def _sequential(order: np.ndarray, k: int, m: int, eps: float) -> np.ndarray:
    """Sequential choice probabilities of an epsilon-greedy slate.

    The slate is a mixture of two whole-slate choices, so the probability of the item at
    ``p`` given the items above is ``P(prefix to p) / P(prefix to p - 1)``, each prefix
    probability being ``(1 - eps) [prefix is the top's] + eps (m - p)! / m!``.
    """

    def prefix(length: int) -> float:
        if length == 0:
            return 1.0
        on_top = bool(np.array_equal(order[:length], np.arange(length)))
        uniform = math.exp(math.lgamma(m - length + 1) - math.lgamma(m + 1))
        return (1 - eps) * on_top + eps * uniform

    probs = [prefix(p + 1) / prefix(p) for p in range(k)]
    return np.asarray(probs, dtype=np.float64)


def parse_policy(text: str, depth: int = 50) -> SlatePolicy:
    """A policy from ``name`` or ``name:parameter`` (e.g. ``plackett_luce:0.5``).

    Raises:
        ValueError: unknown name, missing or bad parameter.
    """
    name, _, value = text.strip().partition(":")
    if name == DETERMINISTIC:
        if value:
            raise ValueError("the deterministic policy takes no parameter")
        return SlatePolicy(DETERMINISTIC, 0.0, depth)
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}; expected one of {list(POLICIES)}")
    if not value:
        raise ValueError(f"policy {name} needs a parameter: {name}:<value>")
    try:
        parameter = float(value)
    except ValueError:
        raise ValueError(f"policy {name}: {value!r} is not a number") from None
    return SlatePolicy(name, parameter, depth)
