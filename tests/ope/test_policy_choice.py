"""A policy bandit's arm-level log from the event store, and the arm distributions of
candidate bandits (:mod:`recsys.ope.policy_choice`).

The logging bandit here is synthetic with a known truth: three arms, two contexts,
logging probabilities chosen per context (recorded as ``bandit_propensity``), and each
shown item clicked with a known per-(context, arm) rate, so a list's expected CTR under
an arm is that rate. Events go through the real producer into a real SQLite store and
are read back the way ``evaluate_store`` reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recsys.bandits import EpsilonGreedy, LinearThompson, LinUCB, Uniform
from recsys.bandits.linear import LinearBandit
from recsys.events.attribution import AttributionConfig
from recsys.events.producer import EventProducer
from recsys.events.sqlite_store import SqliteStore
from recsys.ope.bootstrap import BootstrapConfig
from recsys.ope.errors import OPEInputError
from recsys.ope.estimators import InverseProbabilityWeighting, SelfNormalizedIPS
from recsys.ope.evaluate import evaluate
from recsys.ope.policy_choice import (
    arm_distribution,
    fixed_arm_distribution,
    policy_choice_log,
    uniform_arm_distribution,
)
from recsys.ope.store_eval import read_store_events
from recsys.runtime.context import RequestContext
from recsys.runtime.exposure import exposure_event

T0_MS = 1_765_000_000_000
ARMS = ("deterministic", "epsilon_greedy:0.1", "plackett_luce:0.3")
CONTEXTS = ((1.0, 0.0), (1.0, 1.0))
# the logging bandit's probability of each arm at each context (rows sum to 1)
LOGGING = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
# each shown item's click probability per (context, arm): a list's expected CTR
# (arm 1 is the best on average, arm 0 the worst; arm 2 beats arm 0 only at context 0)
RATES = np.array([[0.05, 0.30, 0.20], [0.15, 0.40, 0.10]])
SLOTS = 2


def shown(
    n: int,
    *,
    arm: int | None,
    x: Sequence[float] = CONTEXTS[0],
    propensity: float | None = 0.5,
    bandit: str = "ranking@1",
    user: str | None = None,
    at_ms: int | None = None,
) -> dict[str, Any]:
    """The exposure of request ``r-<n>`` (items ``10n, 10n + 1``); ``arm=None``: no bandit."""
    ctx = RequestContext(request_time_ms=T0_MS + n * 60_000 if at_ms is None else at_ms,
                         request_id=f"r-{n}")  # fmt: skip
    extra: dict[str, Any] = {}
    if arm is not None:
        extra = {"bandit": bandit, "bandit_arm": arm, "bandit_context": list(x)}
        if propensity is not None:
            extra["bandit_propensity"] = propensity
    return exposure_event(
        user_id=user or f"u{n % 40}", items=[10 * n, 10 * n + 1], scores=[2.0, 1.0],
        context=ctx, k=SLOTS, bundle="b1", model="recommend:1", extra=extra,
    )  # fmt: skip


def click(
    n: int, position: int, after_s: float, *, by_id: bool = True, tag: str = ""
) -> dict[str, Any]:
    """A click on request ``r-<n>``'s item at ``position``, ``after_s`` after its exposure."""
    return {
        "event_id": f"c-{n}-{position}-{after_s}{tag}", "user_id": f"u{n % 40}",
        "session_id": f"u{n % 40}", "type": "click", "item_id": 10 * n + position,
        "timestamp": (T0_MS + n * 60_000) / 1000 + after_s,
        "payload": {"request_id": f"r-{n}"} if by_id else {},
    }  # fmt: skip


@dataclass(frozen=True)
class Synthetic:
    """A synthetic logging bandit's events and what was drawn for each exposure."""

    events: list[dict[str, Any]]
    context: np.ndarray  # [n] context index
    arm: np.ndarray  # [n] logged arm
    ctr: np.ndarray  # [n] the list's observed CTR


def synthetic_log(n: int, seed: int) -> Synthetic:
    """``n`` exposures of bandit ``ranking``: context uniform, arm ~ LOGGING, clicks ~ RATES."""
    rng = np.random.default_rng(seed)
    events: list[dict[str, Any]] = []
    contexts, arms, ctrs = [], [], []
    for i in range(n):
        c = int(rng.integers(2))
        a = int(rng.choice(3, p=LOGGING[c]))
        events.append(shown(i, arm=a, x=CONTEXTS[c], propensity=float(LOGGING[c, a])))
        clicked = rng.random(SLOTS) < RATES[c, a]
        events.extend(click(i, p, 5.0 + p) for p in range(SLOTS) if clicked[p])
        contexts.append(c)
        arms.append(a)
        ctrs.append(clicked.mean())
    return Synthetic(events, np.array(contexts), np.array(arms), np.array(ctrs))


def through_store(events: list[dict[str, Any]], path: Path) -> list[Any]:
    """Publishes ``events`` into a SQLite store at ``path`` and reads them back."""
    store = SqliteStore(path)
    try:
        assert EventProducer(store).publish(events) == len(events)
    finally:
        store.close()
    return read_store_events(str(path))


def test_one_row_per_logged_choice_with_its_propensity_and_reward(tmp_path: Path) -> None:
    events = [
        shown(0, arm=0, x=(1.0, 0.0), propensity=0.5),
        shown(1, arm=2, x=(1.0, 1.0), propensity=0.25),
        shown(2, arm=1, x=(1.0, 1.0), propensity=0.3, bandit="ranking@2"),  # another version
        shown(3, arm=1, x=(1.0, 0.0), propensity=0.3),
        shown(4, arm=0, x=(1.0, 0.0), propensity=0.6),
        shown(5, arm=0, propensity=0.5, bandit="other@1"),  # another bandit: not ours
        shown(6, arm=None),  # no bandit at all (a list an experiment arm decided)
        shown(7, arm=1, propensity=None),  # ours, but without its propensity
        click(0, 0, 5.0),
        click(0, 1, 9.0),
        click(0, 0, 12.0, tag="-again"),  # the same item again: still one click of two
        click(1, 1, 30.0, by_id=False),  # no request id: joined by the window
        click(3, 0, 3600.0),  # names its request, but an hour later: outside the window
        click(4, 1, 3600.0, by_id=False),  # an hour later, by window: joins nothing
    ]
    typed = through_store(events, tmp_path / "rt.db")
    got = policy_choice_log(
        typed, bandit="ranking", arms=ARMS, attribution=AttributionConfig(window_s=1800.0)
    )
    assert got.request_ids == ("r-0", "r-1", "r-2", "r-3", "r-4")
    assert got.arms == ARMS
    log = got.log
    assert log.n_rounds == 5 and log.n_actions == 3
    assert log.action.tolist() == [0, 2, 1, 1, 0]
    assert log.pscore.tolist() == [0.5, 0.25, 0.3, 0.3, 0.6]
    assert log.position.tolist() == [0] * 5
    assert log.reward.tolist() == [1.0, 0.5, 0.0, 0.0, 0.0]
    assert log.context is not None
    assert log.context.tolist() == [[1.0, 0.0], [1.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 0.0]]
    assert got.ts_us.tolist() == [(T0_MS + n * 60_000) * 1000 for n in range(5)]
    assert got.skipped == {"no bandit_arm, bandit_context, bandit_propensity or request_id": 1}
    # the rows are in time order whatever order the events come in
    backwards = policy_choice_log(list(reversed(typed)), bandit="ranking", arms=ARMS)
    assert backwards.request_ids == got.request_ids
    np.testing.assert_array_equal(backwards.log.reward, log.reward)
    # any_click: 1 for a list with a click, whatever the share of its items
    anyc = policy_choice_log(typed, bandit="ranking@7", arms=ARMS, reward="any_click")
    assert anyc.log.reward.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    # a wider window takes the late click that names its request (the window-joined one
    # needs the user's latest exposure of the item within the window: also joined now)
    wide = policy_choice_log(typed, bandit="ranking", attribution=AttributionConfig(7200.0))
    assert wide.log.reward.tolist() == [1.0, 0.5, 0.0, 0.5, 0.5]
    assert wide.arms == ("arm0", "arm1", "arm2")  # no names given: arm0 .. armK-1
    # the time range keeps the exposures in [since, until)
    ts = got.ts_us
    part = policy_choice_log(typed, bandit="ranking", arms=ARMS, since_us=int(ts[1]),
                             until_us=int(ts[3]))  # fmt: skip
    assert part.request_ids == ("r-1", "r-2")


def test_a_resent_exposure_is_one_row(tmp_path: Path) -> None:
    # the producer appends what it is given: an exposure published twice (a retry) is
    # still one logged choice, not two
    events = [shown(0, arm=0), shown(0, arm=0), shown(1, arm=1), click(0, 0, 5.0)]
    got = policy_choice_log(through_store(events, tmp_path / "rt.db"), bandit="ranking")
    assert got.request_ids == ("r-0", "r-1")
    assert got.log.reward.tolist() == [0.5, 0.0]
    assert got.skipped == {"duplicate exposure (request id seen before)": 1}


def test_logs_the_code_refuses() -> None:
    with pytest.raises(OPEInputError, match=r"none of bandit 'ranking' \(bandits logged: other\)"):
        policy_choice_log([shown(0, arm=0, bandit="other@1")], bandit="ranking")
    late = shown(0, arm=0, at_ms=T0_MS + 3_600_000)
    with pytest.raises(OPEInputError, match=r"in the range given \(1 exposures of it in all\)"):
        policy_choice_log([late], bandit="ranking", until_us=T0_MS * 1000)
    with pytest.raises(OPEInputError, match=r"usable \(1 exposures of it in all, 1 left out"):
        policy_choice_log([shown(0, arm=0, propensity=None)], bandit="ranking")
    with pytest.raises(OPEInputError, match="lengths differ"):
        policy_choice_log([shown(0, arm=0), shown(1, arm=1, x=(1.0, 0.0, 2.0))], bandit="ranking")
    with pytest.raises(OPEInputError, match=r"outside 0\.\.1"):
        policy_choice_log([shown(0, arm=2)], bandit="ranking", arms=["a", "b"])
    with pytest.raises(OPEInputError, match="reward: expected one of"):
        policy_choice_log([shown(0, arm=0)], bandit="ranking", reward="clicks")  # type: ignore[arg-type]
    with pytest.raises(OPEInputError, match="pscore"):
        policy_choice_log([shown(0, arm=0, propensity=0.0)], bandit="ranking")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Synthetic, list[Any]]:
    """3,000 exposures of the synthetic logging bandit, through a SQLite store."""
    data = synthetic_log(3000, seed=7)
    typed = through_store(data.events, tmp_path_factory.mktemp("policy_choice") / "rt.db")
    return data, typed


def test_the_synthetic_log_is_what_was_drawn(synthetic: tuple[Synthetic, list[Any]]) -> None:
    data, typed = synthetic
    got = policy_choice_log(typed, bandit="ranking", arms=ARMS)
    assert got.log.n_rounds == 3000 and got.skipped == {}
    np.testing.assert_array_equal(got.log.action, data.arm)
    np.testing.assert_allclose(got.log.pscore, LOGGING[data.context, data.arm])
    np.testing.assert_allclose(got.log.reward, data.ctr)
    # each arm was logged about as often as the logging probabilities say
    expected = LOGGING.mean(axis=0) * 3000  # contexts are equally likely
    counts = np.bincount(got.log.action, minlength=3)
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected))


def test_ips_and_snips_of_each_fixed_arm_recover_its_known_value(
    synthetic: tuple[Synthetic, list[Any]],
) -> None:
    data, typed = synthetic
    got = policy_choice_log(typed, bandit="ranking", arms=ARMS)
    n = got.log.n_rounds
    values = []
    for a, name in enumerate(ARMS):
        # the arm's value on these contexts: its expected CTR at each logged context
        truth = float(RATES[data.context, a].mean())
        candidate = got.log.with_candidate(fixed_arm_distribution(a, n, len(ARMS)))
        estimates = evaluate(candidate, [InverseProbabilityWeighting(), SelfNormalizedIPS()],
                             BootstrapConfig(200, seed=a))  # fmt: skip
        for e in estimates:
            assert 0 < e.std_error < 0.02, (name, e)
            assert abs(e.value - truth) < 4 * e.std_error, (name, e.estimator, e.value, truth)
        values.append(truth)
    # the arms really differ, so the checks above tell them apart
    assert max(values) - min(values) > 0.05
    # the uniform policy's value is the mean of the arms'
    uni = got.log.with_candidate(uniform_arm_distribution(n, len(ARMS)))
    [snips] = evaluate(uni, [SelfNormalizedIPS()], BootstrapConfig(200, seed=9))
    assert abs(snips.value - float(np.mean(values))) < 4 * snips.std_error


def _trained(bandit: LinearBandit, seed: int) -> LinearBandit:
    """``bandit`` after 300 updates where arm ``k``'s reward grows with context value ``k``."""
    rng = np.random.default_rng(seed)
    for _ in range(300):
        x = np.concatenate([[1.0], rng.normal(size=bandit.dim - 1)])
        arm = int(rng.integers(bandit.n_arms))
        bandit.update(arm, x, float(rng.random() < 0.5 + 0.2 * np.tanh(x[arm % bandit.dim])))
    return bandit


def _contexts(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([np.ones(n), rng.normal(size=(n, dim - 1))])


@pytest.mark.parametrize(
    "bandit",
    [LinUCB(3, 3, alpha=0.7), LinUCB(3, 3, alpha=0.0), EpsilonGreedy(3, 3, epsilon=0.3)],
    ids=["linucb", "greedy", "epsilon-greedy"],
)
def test_arm_distribution_is_the_bandits_own_choice_probability(bandit: LinearBandit) -> None:
    trained = _trained(bandit, seed=1)
    x = _contexts(60, 3, seed=2)
    dist = arm_distribution(trained, x)
    assert dist.shape == (60, 3)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0)
    rng = np.random.default_rng(3)
    chosen_arms = set()
    for row, xi in zip(dist, x, strict=True):
        for _ in range(5):
            choice = trained.select(xi, rng)
            # the probability select logs for its arm is the distribution's
            assert row[choice.arm] == pytest.approx(choice.propensity)
            chosen_arms.add(choice.arm)
    assert len(chosen_arms) > 1  # the contexts lead to different arms
    # and select's frequencies at one context match the distribution
    draws = np.bincount([trained.select(x[0], rng).arm for _ in range(4000)], minlength=3)
    np.testing.assert_allclose(draws / 4000, dist[0], atol=0.03)


def test_thompson_and_uniform_distributions() -> None:
    ts = _trained(LinearThompson(3, 3, noise=0.5), seed=4)
    x = _contexts(5, 3, seed=5)
    dist = arm_distribution(ts, x, draws=4000, seed=0)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0)
    rng = np.random.default_rng(6)
    for row, xi in zip(dist, x, strict=True):
        freq = np.bincount([ts.select(xi, rng).arm for _ in range(2000)], minlength=3) / 2000
        np.testing.assert_allclose(freq, row, atol=0.05)
    np.testing.assert_allclose(arm_distribution(Uniform(4, 3), x), np.full((5, 4), 0.25))
    with pytest.raises(OPEInputError, match=r"expected \[n, 3\]"):
        arm_distribution(ts, np.ones((4, 2)))
    with pytest.raises(OPEInputError, match=r"3 is not in 0\.\.2"):
        fixed_arm_distribution(3, 4, 3)
