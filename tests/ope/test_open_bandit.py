"""The Open Bandit sample: reading it, the BTS policy's probabilities, and the protocol."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, stats

from recsys.ope.bootstrap import BootstrapConfig
from recsys.ope.errors import OPEInputError
from recsys.ope.estimators import InverseProbabilityWeighting
from recsys.ope.open_bandit import (
    BetaPrior,
    bts_position_probabilities,
    load_bts_prior,
    load_open_bandit_log,
    open_bandit_dir,
    uniform_position_policy,
)
from recsys.ope.open_bandit_protocol import OpenBanditConfig, run_open_bandit


def _raw(data_dir: Path, policy: str) -> list[dict[str, str]]:
    path = data_dir / "open-bandit-sample" / policy / "all" / "all.csv"
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("policy", ["random", "bts"])
def test_the_logs_are_read_as_item_position_rows(open_bandit_data_dir: Path, policy: str) -> None:
    log = load_open_bandit_log(policy, data_dir=open_bandit_data_dir, n_actions=80).data
    raw = _raw(open_bandit_data_dir, policy)
    assert log.n_rounds == len(raw)
    assert (log.n_actions, log.n_positions) == (80, 3)
    assert log.reward.sum() == sum(int(r["click"]) for r in raw)
    assert log.position.tolist() == [int(r["position"]) - 1 for r in raw]
    np.testing.assert_allclose(log.pscore, [float(r["propensity_score"]) for r in raw])
    if policy == "random":
        np.testing.assert_allclose(log.pscore, 1 / 80)


def test_the_sample_folder_is_found_from_the_datasets_folder_or_itself(
    open_bandit_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = open_bandit_data_dir / "open-bandit-sample"
    assert open_bandit_dir(open_bandit_data_dir) == sample
    assert open_bandit_dir(sample) == sample
    monkeypatch.setenv("RECSYS_DATA_DIR", str(open_bandit_data_dir))
    assert open_bandit_dir() == sample
    with pytest.raises(FileNotFoundError, match="RECSYS_DATA_DIR"):
        open_bandit_dir(tmp_path)
    with pytest.raises(OPEInputError, match="policy"):
        load_open_bandit_log("epsilon", data_dir=open_bandit_data_dir)


def _top_probability(prior: BetaPrior, item: int) -> float:
    """P(item's draw is the largest) = integral of its density times the others' CDFs."""
    others = [j for j in range(prior.alpha.size) if j != item]

    def f(t: float) -> float:
        log_cdf = stats.beta.logcdf(t, prior.alpha[others], prior.beta[others]).sum()
        return float(np.exp(stats.beta.logpdf(t, prior.alpha[item], prior.beta[item]) + log_cdf))

    mean = prior.alpha[item] / (prior.alpha[item] + prior.beta[item])
    sd = np.sqrt(mean * (1 - mean) / (prior.alpha[item] + prior.beta[item] + 1))
    lo, hi = max(0.0, mean - 12 * sd), min(1.0, mean + 12 * sd)
    return float(integrate.quad(f, lo, hi, limit=200, points=[mean])[0])


def test_bts_first_position_probabilities_match_numerical_integration(
    open_bandit_data_dir: Path,
) -> None:
    prior = load_bts_prior("all", open_bandit_data_dir)
    assert prior.alpha.shape == prior.beta.shape == (80,)
    bts = bts_position_probabilities(prior, n_samples=200_000, seed=3)
    np.testing.assert_allclose(bts.probabilities.sum(axis=0), 1.0)
    ranked = np.argsort(-bts.probabilities[:, 0])
    for item in ranked[:12]:  # the items BTS puts first most often
        exact = _top_probability(prior, int(item))
        se = np.sqrt(exact * (1 - exact) / bts.n_samples)
        assert abs(bts.probabilities[item, 0] - exact) < 4 * se + 1e-12, (item, exact)
    assert bts.group_probabilities is not None
    np.testing.assert_allclose(bts.group_probabilities.mean(axis=0), bts.probabilities)


def test_bts_probabilities_rank_and_are_seeded() -> None:
    prior = BetaPrior(np.array([50.0, 10.0, 1.0, 1.0]), np.array([50.0, 90.0, 99.0, 99.0]), "x")
    a = bts_position_probabilities(prior, n_positions=2, n_samples=20_000, seed=1, groups=4)
    b = bts_position_probabilities(prior, n_positions=2, n_samples=20_000, seed=1, groups=4)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    assert a.probabilities[0, 0] > 0.99  # mean 0.5 beats means of 0.1 and 0.01
    assert a.probabilities[1, 1] > a.probabilities[2, 1]
    assert (a.standard_error <= np.sqrt(0.25 / 20_000)).all()
    with pytest.raises(OPEInputError, match="multiple of groups"):
        bts_position_probabilities(prior, n_samples=1001, groups=10)
    with pytest.raises(OPEInputError, match="n_positions"):
        bts_position_probabilities(prior, n_positions=5)
    with pytest.raises(OPEInputError, match="> 0"):
        BetaPrior(np.array([0.0]), np.array([1.0]), "x")
    uniform = uniform_position_policy(80)
    np.testing.assert_allclose(uniform.probabilities, 1 / 80)


def test_ips_of_bts_on_the_random_log_is_the_reweighted_click_mean(
    open_bandit_data_dir: Path,
) -> None:
    log = load_open_bandit_log("random", data_dir=open_bandit_data_dir, n_actions=80).data
    bts = bts_position_probabilities(load_bts_prior("all", open_bandit_data_dir),
                                     n_samples=100_000)  # fmt: skip
    raw = _raw(open_bandit_data_dir, "random")
    by_hand = np.mean([
        int(r["click"]) * bts.probabilities[int(r["item_id"]), int(r["position"]) - 1]
        / float(r["propensity_score"])
        for r in raw
    ])  # fmt: skip
    attached = log.with_candidate(bts.action_dist(log))
    assert InverseProbabilityWeighting().estimate(attached) == pytest.approx(by_hand)


@pytest.mark.parametrize(("behavior", "candidate"), [("random", "bts"), ("bts", "random")])
def test_the_protocol_estimates_in_the_range_of_the_on_policy_ctr(
    open_bandit_data_dir: Path, behavior: str, candidate: str
) -> None:
    cfg = OpenBanditConfig(bts_samples=100_000, bootstrap=BootstrapConfig(100, seed=0))
    result = run_open_bandit(behavior, candidate, data_dir=open_bandit_data_dir, config=cfg)
    raw = _raw(open_bandit_data_dir, candidate)
    assert result.on_policy.value == pytest.approx(np.mean([int(r["click"]) for r in raw]))
    assert len(result.estimates) == 6 and result.rows == 10_000
    op = result.on_policy
    for e in result.estimates:
        assert e.lower <= e.value <= e.upper
        # ~40 clicks: the estimates are noisy, but their intervals must meet the
        # candidate's own logged CTR interval
        assert e.lower <= op.upper and op.lower <= e.upper, e
    if candidate == "random":
        assert all(v == 0.0 for v in result.monte_carlo_error.values())
    else:
        assert all(0 < v < 1e-4 for v in result.monte_carlo_error.values())
    table = result.table()
    assert f"on-policy ({candidate}'s own log)" in table
    assert len(table.splitlines()) == 2 + len(result.estimates) + 1
