"""Each estimator computes its formula; the family's limits meet (DR -> DM, DR -> IPS)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys.ope.errors import OPEInputError
from recsys.ope.estimators import (
    ESTIMATOR_NAMES,
    DirectMethod,
    DoublyRobust,
    DoublyRobustOptimisticShrinkage,
    InverseProbabilityWeighting,
    RowTerms,
    SelfNormalizedIPS,
    SwitchDoublyRobust,
    default_estimators,
    estimator_by_name,
)
from recsys.ope.logged import LoggedBandit


def _random_log(seed: int = 0, n: int = 300, k: int = 4) -> LoggedBandit:
    rng = np.random.default_rng(seed)
    logging = rng.dirichlet(np.ones(k), size=n)
    action = np.array([rng.choice(k, p=p) for p in logging])
    return LoggedBandit.build(
        action=action,
        reward=rng.binomial(1, 0.3, size=n).astype(float),
        pscore=logging[np.arange(n), action],
        n_actions=k,
        action_dist=rng.dirichlet(np.ones(k), size=n),
        reward_hat=rng.random((n, k)),
    )


def _loops(log: LoggedBandit) -> dict[str, float]:
    """The estimators written out row by row, independently of the vectorized code."""
    assert log.action_dist is not None and log.reward_hat is not None
    ips = sn_num = sn_den = dm = dr = 0.0
    for i in range(log.n_rounds):
        a = log.action[i]
        w = log.action_dist[i, a] / log.pscore[i]
        r = log.reward[i]
        direct = sum(log.action_dist[i, b] * log.reward_hat[i, b] for b in range(log.n_actions))
        ips += w * r
        sn_num += w * r
        sn_den += w
        dm += direct
        dr += direct + w * (r - log.reward_hat[i, a])
    n = log.n_rounds
    return {"IPS": ips / n, "SNIPS": sn_num / sn_den, "DM": dm / n, "DR": dr / n}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimators_match_their_formulas(seed: int) -> None:
    log = _random_log(seed)
    want = _loops(log)
    got = {e.name: e.estimate(log) for e in default_estimators()}
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-12)


def test_switch_and_shrinkage_span_dm_to_dr() -> None:
    log = _random_log(3)
    dm, dr = DirectMethod().estimate(log), DoublyRobust().estimate(log)
    assert dm != pytest.approx(dr)
    assert SwitchDoublyRobust(tau=math.inf).estimate(log) == pytest.approx(dr)
    assert SwitchDoublyRobust(tau=0.0).estimate(log) == pytest.approx(dm)
    assert DoublyRobustOptimisticShrinkage(lambda_=math.inf).estimate(log) == pytest.approx(dr)
    assert DoublyRobustOptimisticShrinkage(lambda_=0.0).estimate(log) == pytest.approx(dm)
    # a huge lambda leaves the weights almost untouched
    near_dr = DoublyRobustOptimisticShrinkage(lambda_=1e12).estimate(log)
    assert near_dr == pytest.approx(dr, rel=1e-6)


def test_switch_drops_exactly_the_rows_above_tau() -> None:
    log = _random_log(4)
    w = log.importance_weights()
    tau = float(np.median(w))
    assert log.reward_hat is not None
    q_logged = log.reward_hat[np.arange(log.n_rounds), log.action]
    kept = w <= tau
    dm = DirectMethod().estimate(log)
    want = dm + float(np.sum((w * (log.reward - q_logged))[kept])) / log.n_rounds
    assert SwitchDoublyRobust(tau=tau).estimate(log) == pytest.approx(want)


def test_dr_with_a_zero_model_is_ips_and_snips_ignores_the_propensity_scale() -> None:
    log = _random_log(5)
    zero = log.with_reward_model(np.zeros((log.n_rounds, log.n_actions)))
    assert DoublyRobust().estimate(zero) == pytest.approx(
        InverseProbabilityWeighting().estimate(log)
    )
    assert DirectMethod().estimate(zero) == 0.0
    halved = LoggedBandit.build(
        action=log.action, reward=log.reward, pscore=log.pscore / 2, n_actions=log.n_actions,
        action_dist=log.action_dist,
    )  # fmt: skip
    ips, snips = InverseProbabilityWeighting(), SelfNormalizedIPS()
    assert ips.estimate(halved) == pytest.approx(2 * ips.estimate(log))
    assert snips.estimate(halved) == pytest.approx(snips.estimate(log))


def test_on_the_logging_policy_itself_ips_is_the_mean_reward() -> None:
    log = _random_log(6)
    same = log.with_target_pscore(log.pscore)
    assert InverseProbabilityWeighting().estimate(same) == pytest.approx(log.on_policy_value())
    assert SelfNormalizedIPS().estimate(same) == pytest.approx(log.on_policy_value())


def test_missing_inputs_are_named() -> None:
    log = _random_log(7)
    only_target = log.with_target_pscore(log.target_pscore)  # type: ignore[arg-type]
    assert InverseProbabilityWeighting().estimate(only_target) == pytest.approx(
        InverseProbabilityWeighting().estimate(log)
    )
    with pytest.raises(OPEInputError, match="DM: needs the candidate's full action distribution"):
        DirectMethod().estimate(only_target)
    no_model = LoggedBandit.build(
        action=log.action, reward=log.reward, pscore=log.pscore, n_actions=log.n_actions,
        action_dist=log.action_dist,
    )  # fmt: skip
    with pytest.raises(OPEInputError, match="DR: needs a reward model"):
        DoublyRobust().estimate(no_model)
    with pytest.raises(OPEInputError, match="tau"):
        SwitchDoublyRobust(tau=-1.0)
    with pytest.raises(OPEInputError, match="lambda_"):
        DoublyRobustOptimisticShrinkage(lambda_=float("nan"))


def test_self_normalization_without_support_is_an_error() -> None:
    log = _random_log(8)
    none = log.with_target_pscore(np.zeros(log.n_rounds))
    assert InverseProbabilityWeighting().estimate(none) == 0.0
    with pytest.raises(OPEInputError, match="sum to 0"):
        SelfNormalizedIPS().estimate(none)


def test_resampled_terms_agree_with_recomputing_on_the_resample() -> None:
    log = _random_log(9, n=50)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, log.n_rounds, size=(3, log.n_rounds))
    counts = np.stack([np.bincount(r, minlength=log.n_rounds) for r in rows])
    for e in default_estimators():
        fast = e.terms(log).resampled(counts)
        slow = [e.estimate(log.take(r)) for r in rows]
        np.testing.assert_allclose(fast, slow, rtol=1e-12)
    t = RowTerms(direct=np.zeros(2), weighted=np.ones(2), weight=np.zeros(2))
    assert np.isnan(t.resampled(np.array([[1, 1]]))).all()


def test_estimators_by_name() -> None:
    names = [estimator_by_name(n).name for n in ESTIMATOR_NAMES]
    assert names == [e.name for e in default_estimators()]
    assert estimator_by_name(" DR ").name == "DR"
    with pytest.raises(OPEInputError, match="unknown estimator"):
        estimator_by_name("magic")
