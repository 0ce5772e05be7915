"""The synthetic problems: valid policies, and true values that on-policy logs reproduce."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.ope.errors import OPEInputError
from recsys.ope.synthetic import SyntheticBandit, SyntheticBanditConfig, softmax


@pytest.mark.parametrize("reward", ["logistic", "linear"])
def test_policies_are_distributions_with_full_logging_support(reward: str) -> None:
    problem = SyntheticBandit(SyntheticBanditConfig(reward=reward, seed=3))
    for name, pi in problem.candidates().items():
        assert pi.shape == (problem.config.n_contexts, problem.config.n_actions), name
        np.testing.assert_allclose(pi.sum(axis=1), 1.0)
        assert (pi >= 0).all()
    assert (problem.logging > 0).all()  # every action can be logged: IPS is defined


@pytest.mark.parametrize("reward", ["logistic", "linear"])
def test_the_true_value_is_what_an_on_policy_log_averages_to(reward: str) -> None:
    problem = SyntheticBandit(SyntheticBanditConfig(reward=reward, seed=4))
    truth = problem.true_value(problem.logging)
    log = problem.sample(200_000, seed=5).log
    se = log.reward.std() / np.sqrt(log.n_rounds)
    assert abs(log.on_policy_value() - truth) < 4 * se


def test_far_is_farther_from_the_logger_than_near_and_better() -> None:
    problem = SyntheticBandit()
    pi = problem.candidates()
    max_w = {k: float((pi[k] / problem.logging).max()) for k in ("near", "far")}
    assert max_w["near"] < max_w["far"]
    values = {k: problem.true_value(v) for k, v in pi.items()}
    assert values["far"] > values["near"] > values["logging"] > values["uniform"]


def test_samples_are_seeded_and_carry_the_logging_propensity() -> None:
    problem = SyntheticBandit(SyntheticBanditConfig(n_actions=3, dim=2, n_contexts=50))
    a = problem.sample(100, seed=1)
    b = problem.sample(100, seed=1)
    np.testing.assert_array_equal(a.log.action, b.log.action)
    np.testing.assert_array_equal(a.log.reward, b.log.reward)
    np.testing.assert_allclose(a.log.pscore, problem.logging[a.context_index, a.log.action])
    assert not np.array_equal(a.log.action, problem.sample(100, seed=2).log.action)
    np.testing.assert_allclose(
        problem.oracle_reward_model(a), problem.expected_reward[a.context_index]
    )


def test_bad_settings_are_refused() -> None:
    with pytest.raises(OPEInputError, match="reward"):
        SyntheticBanditConfig(reward="poisson")
    with pytest.raises(OPEInputError, match="temperatures"):
        SyntheticBanditConfig(logging_temperature=0.0)
    with pytest.raises(OPEInputError, match="policy: expected shape"):
        SyntheticBandit().true_value(np.ones((2, 2)))
    np.testing.assert_allclose(softmax([[1000.0, 0.0]]), [[1.0, 0.0]])
