"""Bootstrap intervals: seeded, as wide as the estimator's spread, and covering the truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys.ope.bootstrap import (
    BootstrapConfig,
    bootstrap_estimate,
    bootstrap_replicates,
    on_policy_estimate,
)
from recsys.ope.errors import OPEInputError
from recsys.ope.estimators import (
    DirectMethod,
    DoublyRobust,
    InverseProbabilityWeighting,
    SelfNormalizedIPS,
    default_estimators,
)
from recsys.ope.evaluate import estimates_table, evaluate
from recsys.ope.logged import LoggedBandit
from recsys.ope.reward_model import ridge_refit
from recsys.ope.synthetic import SyntheticBandit, SyntheticBanditConfig

PROBLEM = SyntheticBandit(SyntheticBanditConfig(seed=2))
NEAR = PROBLEM.candidates()["near"]


def _log(seed: int, n: int = 2000) -> LoggedBandit:
    return PROBLEM.sample(n, seed=seed, candidate=NEAR).log


def test_a_seed_gives_the_same_interval_and_another_seed_another() -> None:
    log = _log(0)
    ips = InverseProbabilityWeighting()
    a = bootstrap_estimate(log, ips, BootstrapConfig(300, seed=7))
    b = bootstrap_estimate(log, ips, BootstrapConfig(300, seed=7, chunk_size=17))
    c = bootstrap_estimate(log, ips, BootstrapConfig(300, seed=8))
    assert (a.lower, a.upper) == (b.lower, b.upper)  # chunking does not change the draws
    assert (a.lower, a.upper) != (c.lower, c.upper)
    assert a.value == ips.estimate(log) and a.lower < a.value < a.upper


def test_a_higher_level_gives_a_wider_interval() -> None:
    log = _log(1)
    widths = [
        bootstrap_estimate(log, SelfNormalizedIPS(), BootstrapConfig(500, level=lv)).upper
        - bootstrap_estimate(log, SelfNormalizedIPS(), BootstrapConfig(500, level=lv)).lower
        for lv in (0.8, 0.95, 0.99)
    ]
    assert widths[0] < widths[1] < widths[2]


def test_the_bootstrap_std_matches_the_analytic_standard_error_of_ips() -> None:
    log = _log(2, n=5000)
    est = bootstrap_estimate(log, InverseProbabilityWeighting(), BootstrapConfig(2000))
    terms = log.importance_weights() * log.reward
    analytic = terms.std(ddof=1) / math.sqrt(log.n_rounds)
    assert est.std_error == pytest.approx(analytic, rel=0.1)


def test_intervals_cover_the_truth_at_about_their_level() -> None:
    truth = PROBLEM.true_value(NEAR)
    runs = 80
    covered = sum(
        bootstrap_estimate(
            _log(100 + s), InverseProbabilityWeighting(), BootstrapConfig(200, seed=s)
        ).covers(truth)
        for s in range(runs)
    )
    # 95 % intervals: expect ~76 of 80; below 68 has probability < 0.1 % if calibrated
    assert covered >= 68, covered


def test_refitting_a_fixed_model_reproduces_the_fast_path() -> None:
    base = _log(3, n=500)
    # the row number as the only context feature: a resample's rows can be looked up
    log = LoggedBandit.build(
        action=base.action, reward=base.reward, pscore=base.pscore, n_actions=base.n_actions,
        action_dist=base.action_dist, context=np.arange(base.n_rounds, dtype=float),
    )  # fmt: skip
    q = np.random.default_rng(0).random((log.n_rounds, log.n_actions))
    cfg = BootstrapConfig(40, seed=5)
    fast = bootstrap_replicates(log.with_reward_model(q), list(default_estimators()), cfg)

    def constant_model(sub: LoggedBandit) -> LoggedBandit:
        assert sub.context is not None
        return sub.with_reward_model(q[sub.context[:, 0].astype(int)])

    slow = bootstrap_replicates(log, list(default_estimators()), cfg, refit=constant_model)
    for name in fast:
        np.testing.assert_allclose(fast[name], slow[name], rtol=1e-10)


def test_refitting_shows_dms_model_error_which_dr_corrects() -> None:
    log = _log(4, n=1500)
    cfg = BootstrapConfig(150, seed=1)
    refit = ridge_refit()
    std = {}
    for e in (DirectMethod(), DoublyRobust()):
        once = bootstrap_estimate(refit(log), e, cfg)
        every = bootstrap_estimate(log, e, cfg, refit=refit)
        assert once.value == pytest.approx(every.value)
        std[e.name] = (once.std_error, every.std_error)
    # a fixed model hides DM's main error (the model's): its interval is far too narrow
    assert std["DM"][1] > 2 * std["DM"][0]
    # DR's correction term absorbs the model's error: refitting barely changes it
    assert std["DR"][1] == pytest.approx(std["DR"][0], rel=0.2)


def test_evaluate_shares_resamples_and_tabulates() -> None:
    log = ridge_refit()(_log(5))
    estimates = evaluate(log, config=BootstrapConfig(100))
    assert [e.estimator for e in estimates] == [e.name for e in default_estimators()]
    truth = PROBLEM.true_value(NEAR)
    table = estimates_table(estimates, truth=truth)
    lines = table.splitlines()
    assert len(lines) == 2 + len(estimates)
    assert "rel. error vs truth" in lines[0]
    for e, line in zip(estimates, lines[2:], strict=True):
        assert line.startswith(f"| {e.estimator} | {e.value:.5f}")


def test_no_resamples_gives_a_point_estimate_without_interval() -> None:
    est = bootstrap_estimate(_log(6), InverseProbabilityWeighting(), BootstrapConfig(0))
    assert not math.isnan(est.value) and math.isnan(est.lower) and est.n_resamples == 0
    assert est.to_dict()["lower"] is None


def test_on_policy_estimate_is_the_mean_reward() -> None:
    log = _log(7)
    est = on_policy_estimate(log, BootstrapConfig(200))
    assert est.value == pytest.approx(log.reward.mean()) and est.lower < est.value < est.upper


@pytest.mark.parametrize(
    "kwargs", [{"n_resamples": -1}, {"level": 1.0}, {"level": 0.0}, {"chunk_size": 0}]
)
def test_bad_configs_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(OPEInputError):
        BootstrapConfig(**kwargs)  # type: ignore[arg-type]
