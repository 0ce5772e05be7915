"""Slate-level OPE: slate IPS and the pseudo-inverse estimator against the exact value of
synthetic slate problems, over seeds; their intervals; the log's checks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from recsys.ope.bootstrap import BootstrapConfig
from recsys.ope.errors import OPEInputError
from recsys.ope.slate import (
    PseudoInverse,
    SlateIPS,
    SlateLog,
    SlateProblemConfig,
    slate_estimates,
    slate_study,
    synthetic_slate_problem,
)

ADDITIVE = SlateProblemConfig(n_contexts=10, slots=3, actions=4)
INTERACTING = SlateProblemConfig(n_contexts=10, slots=3, actions=4, interaction=0.5)


def test_the_exact_value_equals_a_brute_force_sum_and_an_on_policy_average() -> None:
    problem = synthetic_slate_problem(INTERACTING, seed=3)
    cfg = problem.config
    total = 0.0
    for c in range(cfg.n_contexts):
        for slate in itertools.product(range(cfg.actions), repeat=cfg.slots):
            s = np.array([slate])
            prob = np.prod([problem.target[c, j, slate[j]] for j in range(cfg.slots)])
            total += prob * float(problem.mean_reward(np.array([c]), s)[0])
    assert problem.true_value == pytest.approx(total / cfg.n_contexts, rel=1e-12)
    # logging with the candidate itself: the log's mean reward estimates the truth
    on_policy = type(problem)(problem.config, problem.click, problem.best, problem.target,
                              problem.target, problem.true_value)  # fmt: skip
    log = on_policy.sample(200_000, seed=4)
    se = log.reward.std() / np.sqrt(log.n_rounds)
    assert abs(log.reward.mean() - problem.true_value) < 4 * se
    # and both estimators reduce to that mean (every weight is 1)
    assert SlateIPS().estimate(log) == pytest.approx(log.reward.mean())
    assert PseudoInverse().estimate(log) == pytest.approx(log.reward.mean())


def _errors(config: SlateProblemConfig, seeds: int, n: int) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {"slate_ips": [], "pseudo_inverse": []}
    for seed in range(seeds):
        problem = synthetic_slate_problem(config, seed)
        log = problem.sample(n, seed=1000 + seed)
        out["slate_ips"].append(SlateIPS().estimate(log) - problem.true_value)
        out["pseudo_inverse"].append(PseudoInverse().estimate(log) - problem.true_value)
    return {k: np.asarray(v) for k, v in out.items()}


def _t(errors: np.ndarray) -> float:
    return float(errors.mean() / (errors.std(ddof=1) / np.sqrt(len(errors))))


def test_pi_is_unbiased_under_additivity_with_less_variance_than_slate_ips() -> None:
    errors = _errors(ADDITIVE, seeds=120, n=3000)
    assert abs(_t(errors["pseudo_inverse"])) < 3.0
    assert abs(_t(errors["slate_ips"])) < 3.0
    assert errors["slate_ips"].std() > 2 * errors["pseudo_inverse"].std()


def test_with_slot_interactions_pi_is_biased_and_slate_ips_is_not() -> None:
    errors = _errors(INTERACTING, seeds=120, n=3000)
    assert _t(errors["pseudo_inverse"]) < -4.0  # it misses the all-best bonus's weight
    assert abs(_t(errors["slate_ips"])) < 3.0


def test_slate_ips_variance_grows_with_the_slate_length_faster_than_pis() -> None:
    short = _errors(SlateProblemConfig(n_contexts=10, slots=2, actions=4), 60, 2000)
    long = _errors(SlateProblemConfig(n_contexts=10, slots=5, actions=4), 60, 2000)
    ips_growth = long["slate_ips"].std() / short["slate_ips"].std()
    pi_growth = long["pseudo_inverse"].std() / short["pseudo_inverse"].std()
    assert ips_growth > 2 * pi_growth


def test_intervals_are_the_seeded_bootstrap_and_cover_the_truth_mostly() -> None:
    problem = synthetic_slate_problem(ADDITIVE, seed=7)
    log = problem.sample(4000, seed=8)
    a = slate_estimates(log, BootstrapConfig(n_resamples=300, seed=1))
    b = slate_estimates(log, BootstrapConfig(n_resamples=300, seed=1))
    for name in ("slate_ips", "pseudo_inverse"):
        assert a[name] == b[name]
        assert a[name].lower < a[name].value < a[name].upper
        assert a[name].n_resamples == 300
    assert a["slate_ips"].std_error > a["pseudo_inverse"].std_error
    rows = slate_study(ADDITIVE, seeds=range(40), n_slates=3000,
                       bootstrap=BootstrapConfig(n_resamples=200))  # fmt: skip
    pi = next(r for r in rows if r.estimator == "pseudo_inverse")
    assert 0.85 <= pi.coverage <= 1.0
    assert pi.rmse == pytest.approx(np.sqrt(pi.bias**2 + pi.std**2 * (39 / 40)), rel=1e-9)


def test_a_log_from_exposure_payloads() -> None:
    payloads = [
        {"slate_propensity": 0.25, "position_propensities": [0.5, 0.5]},
        {"slate_propensity": 0.5, "position_propensities": [1.0, 0.5]},
    ]
    log = SlateLog.from_exposures(payloads, [1.0, 2.0], [0.5, 0.5], [[0.5, 1.0], [1.0, 0.5]])
    assert SlateIPS().estimate(log) == pytest.approx((1 * 2 + 2 * 1) / 2)
    # PI: row 1 weight 1 + 2 - 1 = 2, row 2 weight 1 + 1 - 1 = 1
    assert PseudoInverse().estimate(log) == pytest.approx((1 * 2 + 2 * 1) / 2)
    no_marginals = SlateLog.from_exposures([{"slate_propensity": 0.5}], [1.0], [0.5])
    with pytest.raises(OPEInputError, match="item-position marginals"):
        PseudoInverse().estimate(no_marginals)
    assert sorted(slate_estimates(no_marginals, BootstrapConfig(0))) == ["slate_ips"]
    with pytest.raises(OPEInputError, match="no slate_propensity"):
        SlateLog.from_exposures([{}], [1.0], [0.5])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slate_pscore": np.array([0.0, 0.5])}, "slate_pscore"),
        ({"target_slate": np.array([1.5, 0.5])}, "target_slate"),
        ({"reward": np.array([np.nan, 1.0])}, "NaN"),
        ({"position_pscore": np.ones((2, 2)), "target_position": np.ones((2, 3))}, "shape"),
        ({"position_pscore": np.zeros((2, 2))}, "position_pscore"),
    ],
)
def test_bad_logs_are_refused(kwargs: dict[str, np.ndarray], message: str) -> None:
    base = {"reward": np.ones(2), "slate_pscore": np.full(2, 0.5),
            "target_slate": np.full(2, 0.5)}  # fmt: skip
    with pytest.raises(OPEInputError, match=message):
        SlateLog(**{**base, **kwargs})
