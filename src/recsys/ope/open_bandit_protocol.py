"""The Open Bandit protocol: estimate one logging policy's CTR from the other one's log.

For the sample's two logging policies (uniform ``random`` and Bernoulli Thompson
sampling ``bts``), :func:`run_open_bandit` takes the *behavior* policy's log, attaches
the *candidate* policy's action probabilities (BTS: Monte Carlo over its Beta priors,
:func:`~recsys.ope.open_bandit.bts_position_probabilities`; random: ``1/80``), runs every
estimator, and compares them with the candidate's own logged CTR (its on-policy value).

DM and the doubly robust estimators use the per-(item, position) click-rate model of
:class:`~recsys.ope.reward_model.ItemPositionClickRate` fitted on the behavior log; by
default the bootstrap refits it on every resample, so their intervals include its error.

What the sample allows: about 40 clicks per log, so the on-policy CTR itself has a
relative standard error near 15 % (``1 / sqrt(clicks)``). Relative errors of a few tens of
percent cannot tell estimators apart; the protocol here checks the plumbing on real logs
with true propensities and that estimates land in the right range, not a ranking.

Example:
    >>> result = run_open_bandit("random", "bts")  # doctest: +SKIP
    >>> print(result.table())  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsys.ope.bootstrap import BootstrapConfig, Estimate, on_policy_estimate
from recsys.ope.errors import OPEInputError
from recsys.ope.estimators import OffPolicyEstimator, default_estimators
from recsys.ope.evaluate import estimates_table, evaluate
from recsys.ope.logged import LoggedBandit
from recsys.ope.open_bandit import (
    POLICIES,
    PositionPolicy,
    bts_position_probabilities,
    load_bts_prior,
    load_open_bandit_log,
    monte_carlo_error,
    uniform_position_policy,
)
from recsys.ope.reward_model import ItemPositionClickRate, item_position_refit


@dataclass(frozen=True)
class OpenBanditConfig:
    """One run of the protocol.

    Attributes:
        campaign: the sample's campaign.
        n_items: items of the campaign (80 for ``all``).
        bts_samples: Monte Carlo draws for the BTS probabilities.
        bts_groups: independent parts of those draws, for the Monte Carlo error.
        seed: the Monte Carlo seed (the bootstrap has its own).
        smoothing: pseudo-impressions of the click-rate reward model.
        refit_reward_model: refit the reward model on every bootstrap resample.
        switch_tau: switch-DR's weight threshold.
        dros_lambda: DRos's shrinkage scale.
        bootstrap: the intervals.
    """

    campaign: str = "all"
    n_items: int = 80
    bts_samples: int = 1_000_000
    bts_groups: int = 10
    seed: int = 0
    smoothing: float = 10.0
    refit_reward_model: bool = True
    switch_tau: float = 10.0
    dros_lambda: float = 100.0
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)


@dataclass(frozen=True)
class OpenBanditResult:
    """What one direction of the protocol found.

    Attributes:
        behavior: the policy whose log was used.
        candidate: the policy evaluated.
        estimates: every estimator's estimate of the candidate's CTR.
        on_policy: the candidate's own logged CTR (its log's mean click), with interval.
        behavior_ctr: the behavior log's CTR.
        clicks: clicks in the behavior log.
        rows: rows of the behavior log.
        max_weight: the largest importance weight.
        effective_sample_size: ``(sum w)^2 / sum w^2`` of the importance weights.
        monte_carlo_error: each estimate's standard error from the Monte Carlo
            probabilities (0 for the exact uniform policy).
        policy_probability_error: the largest Monte Carlo standard error of one of the
            candidate's probabilities.
        bts_samples: Monte Carlo draws behind the candidate (0: exact).
    """

    behavior: str
    candidate: str
    estimates: list[Estimate]
    on_policy: Estimate
    behavior_ctr: float
    clicks: int
    rows: int
    max_weight: float
    effective_sample_size: float
    monte_carlo_error: dict[str, float]
    policy_probability_error: float
    bts_samples: int

    def table(self, digits: int = 5) -> str:
        """The markdown table: estimates, intervals, errors vs the on-policy CTR."""
        base = estimates_table(
            self.estimates, truth=self.on_policy.value, truth_label="on-policy", digits=digits
        )
        lines = base.splitlines()
        lines[0] += " Monte Carlo s.e. |"
        lines[1] += "---|"
        for i, e in enumerate(self.estimates):
            lines[2 + i] += f" {self.monte_carlo_error.get(e.estimator, 0.0):.1e} |"
        op = self.on_policy
        lines.append(
            f"| on-policy ({self.candidate}'s own log) | {op.value:.{digits}f} | "
            f"[{op.lower:.{digits}f}, {op.upper:.{digits}f}] | {op.std_error:.{digits}f} "
            "| - | - | - |"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the result."""
        return {
            "behavior": self.behavior,
            "candidate": self.candidate,
            "estimates": [e.to_dict() for e in self.estimates],
            "relative_error": {
                e.estimator: e.relative_error(self.on_policy.value) for e in self.estimates
            },
            "on_policy": self.on_policy.to_dict(),
            "behavior_ctr": self.behavior_ctr,
            "clicks": self.clicks,
            "rows": self.rows,
            "max_weight": self.max_weight,
            "effective_sample_size": self.effective_sample_size,
            "monte_carlo_error": self.monte_carlo_error,
            "policy_probability_error": self.policy_probability_error,
            "bts_samples": self.bts_samples,
        }


def candidate_policy(
    name: str, config: OpenBanditConfig, data_dir: str | Path | None
) -> PositionPolicy:
    """The candidate's item-position probabilities (BTS by Monte Carlo, random exactly)."""
    if name == "random":
        return uniform_position_policy(config.n_items)
    prior = load_bts_prior(config.campaign, data_dir)
    if prior.alpha.shape[0] != config.n_items:
        raise OPEInputError(
            f"prior: {prior.alpha.shape[0]} items in the BTS prior, expected {config.n_items}"
        )
    return bts_position_probabilities(
        prior, n_samples=config.bts_samples, seed=config.seed, groups=config.bts_groups
    )


def run_open_bandit(
    behavior: str,
    candidate: str,
    *,
    data_dir: str | Path | None = None,
    config: OpenBanditConfig | None = None,
    estimators: list[OffPolicyEstimator] | None = None,
) -> OpenBanditResult:
    """Estimates ``candidate``'s CTR from ``behavior``'s log with every estimator.

    Args:
        behavior: the log to use (``random`` or ``bts``).
        candidate: the policy to evaluate (the other one).
        data_dir: see :func:`~recsys.ope.open_bandit.open_bandit_dir`.
        config: the run's settings.
        estimators: which estimators (default: all six).

    Returns:
        The estimates and the candidate's on-policy CTR.
    """
    cfg = config or OpenBanditConfig()
    if behavior not in POLICIES or candidate not in POLICIES or behavior == candidate:
        raise OPEInputError(
            f"behavior and candidate must be the two policies {POLICIES}, got "
            f"{behavior!r} and {candidate!r}"
        )
    chosen = estimators or list(
        default_estimators(switch_tau=cfg.switch_tau, dros_lambda=cfg.dros_lambda)
    )
    logged = load_open_bandit_log(
        behavior, campaign=cfg.campaign, data_dir=data_dir, n_actions=cfg.n_items
    ).data
    truth_log = load_open_bandit_log(
        candidate, campaign=cfg.campaign, data_dir=data_dir, n_actions=cfg.n_items
    ).data
    policy = candidate_policy(candidate, cfg, data_dir)
    with_candidate = logged.with_candidate(policy.action_dist(logged))
    refit = item_position_refit(cfg.smoothing)
    if cfg.refit_reward_model:
        estimates = evaluate(with_candidate, chosen, cfg.bootstrap, refit=refit)
    else:
        estimates = evaluate(refit(with_candidate), chosen, cfg.bootstrap)
    mc = _monte_carlo_errors(with_candidate, policy, chosen, cfg.smoothing)
    w = with_candidate.importance_weights()
    return OpenBanditResult(
        behavior=behavior,
        candidate=candidate,
        estimates=estimates,
        on_policy=on_policy_estimate(truth_log, cfg.bootstrap),
        behavior_ctr=logged.on_policy_value(),
        clicks=int(logged.reward.sum()),
        rows=logged.n_rounds,
        max_weight=float(w.max()),
        effective_sample_size=float(w.sum() ** 2 / np.sum(w * w)),
        monte_carlo_error=mc,
        policy_probability_error=float(policy.standard_error.max()),
        bts_samples=policy.n_samples,
    )


def _monte_carlo_errors(
    log: LoggedBandit,
    policy: PositionPolicy,
    estimators: list[OffPolicyEstimator],
    smoothing: float,
) -> dict[str, float]:
    """Each estimate's spread over the independent Monte Carlo groups, ``std / sqrt(G)``."""
    if policy.group_probabilities is None:
        return {e.name: 0.0 for e in estimators}
    model = ItemPositionClickRate.fit(log, smoothing).predict(log)
    per_group: dict[str, list[float]] = {e.name: [] for e in estimators}
    for probs in policy.group_probabilities:
        attached = log.with_candidate(PositionPolicy.probabilities_at(probs, log))
        attached = attached.with_reward_model(model)
        for e in estimators:
            per_group[e.name].append(e.estimate(attached))
    return {name: monte_carlo_error(np.asarray(v)) for name, v in per_group.items()}
