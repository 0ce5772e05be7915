"""Vowpal Wabbit's contextual bandits: they find a known best arm per context, report the
probabilities they sample with, and learn rewards (not costs) the right way round."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from recsys.bandits.vw import EXPLORATIONS, VowpalWabbitBandit

# the module imports without VW (it imports it lazily), a bandit needs it
pytest.importorskip(
    "vowpalwabbit", reason="vowpalwabbit is not installed (requirements/common.txt pins it)"
)

# three contexts (one-hot after the bias); the best arm of context c is arm c
CTR = np.array([[0.7, 0.2, 0.1], [0.1, 0.7, 0.2], [0.2, 0.1, 0.7]])


def _context(c: int) -> np.ndarray:
    x = np.zeros(4)
    x[0], x[1 + c] = 1.0, 1.0
    return x


def _run(bandit: VowpalWabbitBandit, rounds: int, seed: int) -> np.ndarray:
    """Per round, whether the bandit chose the context's best arm."""
    rng = np.random.default_rng(seed)
    best = np.zeros(rounds, dtype=bool)
    for t in range(rounds):
        c = int(rng.integers(3))
        x = _context(c)
        choice = bandit.select(x, rng)
        assert 0 < choice.propensity <= 1
        bandit.update(choice.arm, x, float(rng.random() < CTR[c, choice.arm]))
        best[t] = choice.arm == c
    return best


# VW's defaults, but bagging with some uniform exploration (alone its bags agree on the
# first arm that paid anything and never try the others: 0.67 here) and cover with less
# diversity pressure (psi 1 keeps 40% of the mass off the best arm: 0.60 here)
SETTINGS: dict[str, dict[str, Any]] = {
    "epsilon": {},
    "squarecb": {},
    "bag": {"epsilon": 0.05},
    "cover": {"psi": 0.1},
}


@pytest.mark.parametrize("exploration", EXPLORATIONS)
def test_finds_the_best_arm_of_each_context(exploration: str) -> None:
    bandit = VowpalWabbitBandit(3, 4, exploration=exploration, seed=1, **SETTINGS[exploration])
    best = _run(bandit, 4000, seed=0)
    # a uniform policy picks the best arm a third of the time, and so does a context-blind
    # one (each arm is best in one context of three)
    assert best[-1000:].mean() > 0.9, f"{exploration}: {best[-1000:].mean():.3f}"
    assert bandit.version == 4000 and bandit.counts.sum() == 4000


@pytest.mark.parametrize("exploration", EXPLORATIONS)
def test_propensities_match_the_choice_frequencies(exploration: str) -> None:
    bandit = VowpalWabbitBandit(3, 4, exploration=exploration, seed=2)
    _run(bandit, 300, seed=3)  # a learnt, non-uniform state
    x = _context(1)
    pmf = bandit.pmf(x)
    assert pmf.sum() == pytest.approx(1.0)
    rng = np.random.default_rng(4)
    n = 20_000
    arms = np.zeros(n, dtype=np.int64)
    for i in range(n):
        choice = bandit.select(x, rng)
        arms[i] = choice.arm
        assert choice.propensity == pytest.approx(pmf[choice.arm])
    np.testing.assert_allclose(bandit.pmf(x), pmf)  # choosing does not change the state
    freq = np.bincount(arms, minlength=3) / n
    se = np.sqrt(pmf * (1 - pmf) / n)
    assert np.all(np.abs(freq - pmf) <= 4 * se + 1e-12), (freq, pmf)


def test_rewards_are_learnt_as_negative_costs() -> None:
    # arm 1 always pays, arm 0 never: a bandit that learnt rewards as costs would prefer arm 0
    bandit = VowpalWabbitBandit(2, 1, exploration="epsilon", epsilon=0.1, seed=0)
    x, rng = np.ones(1), np.random.default_rng(0)
    for _ in range(200):
        arm = bandit.select(x, rng).arm
        bandit.update(arm, x, float(arm == 1))
    np.testing.assert_allclose(bandit.pmf(x), [0.05, 0.95], atol=1e-6)


def test_update_learns_with_the_probability_the_arm_was_chosen_with() -> None:
    # arm 0 then arm 1 both pay once; seen at propensity 1 the first stays ahead, but arm 1
    # drawn with VW's small exploration probability weighs 1 / p more and overtakes it
    x, rng = np.ones(1), np.random.default_rng(0)

    def after(propensity: float | None) -> np.ndarray:
        bandit = VowpalWabbitBandit(2, 1, exploration="epsilon", seed=0)
        bandit.update(0, x, 1.0, propensity=1.0)
        while (choice := bandit.select(x, rng)).arm != 1:
            pass
        assert choice.propensity == pytest.approx(0.025)
        bandit.update(1, x, 1.0, propensity=propensity)
        return bandit.pmf(x)

    np.testing.assert_allclose(after(1.0), [0.975, 0.025], atol=1e-6)
    np.testing.assert_allclose(after(None), [0.025, 0.975], atol=1e-6)  # the select's 0.025
    np.testing.assert_allclose(after(0.025), [0.025, 0.975], atol=1e-6)
    with pytest.raises(ValueError, match="propensity"):
        VowpalWabbitBandit(2, 1).update(1, x, 1.0, propensity=1.5)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="exploration"):
        VowpalWabbitBandit(3, 4, exploration="softmax")
    bandit = VowpalWabbitBandit(3, 4)
    with pytest.raises(ValueError, match="context"):
        bandit.select(np.ones(5), np.random.default_rng(0))
    with pytest.raises(ValueError, match="arm"):
        bandit.update(3, np.ones(4), 1.0)
    with pytest.raises(ValueError, match="reward"):
        bandit.update(0, np.ones(4), float("nan"))
    assert "--epsilon 0.05" in bandit.args and "-q sa" in bandit.args
    assert "--squarecb --gamma_scale 10" in VowpalWabbitBandit(3, 4, "squarecb").args
