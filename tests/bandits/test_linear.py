"""Contextual bandits: they find a known best arm, log true propensities, persist, adapt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.bandits import (
    ContextEncoder,
    EpsilonGreedy,
    LinearBandit,
    LinearThompson,
    LinUCB,
    load_state,
    make_bandit,
    save_state,
)
from recsys.runtime.context import RequestContext

THETA = np.array([[0.1, 0.5, 0.0, 0.0], [0.3, 0.0, 0.3, 0.0], [0.2, 0.1, 0.1, 0.4]])


def _world(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([[1.0], rng.random(3)])
    return x, THETA @ x  # true click probability of each arm


def _run(bandit: LinearBandit | None, rounds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    regret, picks = np.zeros(rounds), np.zeros(rounds, dtype=int)
    for t in range(rounds):
        x, p = _world(rng)
        arm = int(rng.integers(3)) if bandit is None else bandit.select(x, rng).arm
        if bandit is not None:
            bandit.update(arm, x, float(rng.random() < p[arm]))
        regret[t], picks[t] = p.max() - p[arm], arm == int(np.argmax(p))
    return np.cumsum(regret), picks


@pytest.mark.parametrize("name", ["linucb", "linear_ts"])
def test_the_bandit_finds_the_known_best_arm(name: str) -> None:
    kwargs = {"alpha": 0.5} if name == "linucb" else {"noise": 0.2}
    bandit = make_bandit(name, 4, 2, **kwargs)
    rng = np.random.default_rng(7)
    p = np.array([0.30, 0.45, 0.60, 0.40])  # arm 2 is the best whatever the context
    picks = []
    for _ in range(3000):
        x = np.array([1.0, rng.random()])
        arm = bandit.select(x, rng).arm
        bandit.update(arm, x, float(rng.random() < p[arm]))
        picks.append(arm)
    assert np.mean(np.asarray(picks[-1000:]) == 2) > 0.9


@pytest.mark.parametrize("name", ["linucb", "linear_ts"])
def test_contextual_regret_is_far_below_uniform(name: str) -> None:
    kwargs = {"alpha": 0.5} if name == "linucb" else {"noise": 0.2}
    regret, best = _run(make_bandit(name, 3, 4, **kwargs), 4000, seed=1)
    uniform, _ = _run(None, 4000, seed=1)
    assert regret[-1] < 0.3 * uniform[-1]
    assert best[-1000:].mean() > 0.7  # the best arm depends on the context, often narrowly
    # regret grows more slowly in the second half than in the first
    assert regret[-1] - regret[1999] < regret[1999]


def test_epsilon_greedy_propensities_are_exact() -> None:
    bandit = EpsilonGreedy(4, 2, epsilon=0.4)
    bandit.update(2, np.array([1.0, 0.0]), 1.0)  # arm 2 is greedy's choice
    x = np.array([1.0, 0.0])
    rng = np.random.default_rng(0)
    choices = [bandit.select(x, rng) for _ in range(20_000)]
    arms = np.array([c.arm for c in choices])
    for arm in range(4):
        logged = {c.propensity for c in choices if c.arm == arm}
        assert len(logged) == 1
        assert abs((arms == arm).mean() - logged.pop()) < 0.015


def test_thompson_propensity_estimates_the_choice_frequency() -> None:
    bandit = LinearThompson(3, 2, noise=1.0, propensity_draws=2000)
    rng = np.random.default_rng(3)
    for _ in range(30):
        x = np.array([1.0, rng.random()])
        bandit.update(int(rng.integers(3)), x, float(rng.random() < 0.5))
    x = np.array([1.0, 0.5])
    choices = [bandit.select(x, np.random.default_rng(i)) for i in range(3000)]
    arms = np.array([c.arm for c in choices])
    for arm in range(3):
        logged = [c.propensity for c in choices if c.arm == arm]
        if logged:
            assert abs(np.mean(logged) - (arms == arm).mean()) < 0.05


def test_state_round_trips_and_a_mismatched_file_is_refused(tmp_path: Path) -> None:
    bandit = LinUCB(3, 4, alpha=0.7, discount=0.99)
    _run(bandit, 300, seed=2)
    path = save_state(bandit, tmp_path / "state" / "bandit.json", ["a", "b", "c"], list("wxyz"))
    restored = load_state(path, ["a", "b", "c"], list("wxyz"))
    assert isinstance(restored, LinUCB) and restored.alpha == 0.7 and restored.discount == 0.99
    assert restored.version == bandit.version == 300
    np.testing.assert_allclose(restored.theta, bandit.theta)
    x = np.array([1.0, 0.2, 0.3, 0.4])
    assert (
        restored.select(x, np.random.default_rng(0)).arm
        == bandit.select(x, np.random.default_rng(0)).arm
    )
    with pytest.raises(ValueError, match="saved for arms"):
        load_state(path, ["a", "b", "d"], list("wxyz"))
    with pytest.raises(ValueError, match="format"):
        LinearBandit.from_dict({**bandit.to_dict(), "format": 99})
    assert not list(path.parent.glob(".bandit.json.*"))  # no temporary file left


def test_discounting_follows_a_reward_that_changes() -> None:
    def switch_run(discount: float) -> float:
        bandit = LinUCB(2, 1, alpha=0.3, discount=discount)
        rng = np.random.default_rng(0)
        regret = 0.0
        for t in range(6000):
            p = np.array([0.7, 0.3]) if t < 3000 else np.array([0.3, 0.7])
            arm = bandit.select(np.ones(1), rng).arm
            bandit.update(arm, np.ones(1), float(rng.random() < p[arm]))
            if t >= 3000:
                regret += p.max() - p[arm]
        return regret

    assert switch_run(0.99) < 0.5 * switch_run(1.0)


def test_bad_inputs_are_refused() -> None:
    bandit = LinUCB(2, 3)
    with pytest.raises(ValueError, match="context has 2 values"):
        bandit.select(np.ones(2), np.random.default_rng(0))
    with pytest.raises(ValueError, match="NaN"):
        bandit.update(0, np.array([1.0, np.nan, 0.0]), 1.0)
    with pytest.raises(ValueError, match="arm 5"):
        bandit.update(5, np.ones(3), 1.0)
    with pytest.raises(ValueError, match="unknown bandit"):
        make_bandit("exp3", 2, 3)
    with pytest.raises(ValueError, match="discount"):
        LinUCB(2, 3, discount=0.0)


def test_the_context_encoder_reads_device_time_and_segments() -> None:
    enc = ContextEncoder(segments=("a", "b"))
    ctx = RequestContext(device_type="tablet", request_time_ms=1_765_045_800_000,
                         utc_offset_minutes=60)  # fmt: skip
    x = enc.encode(ctx, ["b", "zzz"])
    on = [n for n, v in zip(enc.names(), x, strict=True) if v]
    assert on == ["bias", "device=tablet", "time=evening", "weekend", "segment=b"]
    unknown = enc.encode(RequestContext())
    assert unknown.sum() == 1.0  # only the bias: unknown fields stay zero
