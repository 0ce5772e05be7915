"""The promotion gate promotes only on a lower confidence bound above the current value."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from recsys.ope.bootstrap import BootstrapConfig, Estimate, bootstrap_estimate, on_policy_estimate
from recsys.ope.errors import OPEInputError
from recsys.ope.estimators import DoublyRobust
from recsys.ope.gate import PromotionConfig, promote
from recsys.ope.reward_model import ridge_refit
from recsys.ope.synthetic import SyntheticBandit


def _estimate(value: float, half_width: float) -> Estimate:
    return Estimate("DR", value, value - half_width, value + half_width, half_width / 2,
                    0.95, 1000, 500)  # fmt: skip


def test_a_lower_bound_above_the_current_value_promotes_and_writes_the_report(
    tmp_path: Path,
) -> None:
    decision = promote(_estimate(0.06, 0.005), 0.05, candidate_name="ranker-v2",
                       current_name="ranker-v1", report_dir=tmp_path)  # fmt: skip
    assert decision.promote and decision.threshold == 0.05
    md = (tmp_path / "promotion.md").read_text()
    data = json.loads((tmp_path / "promotion.json").read_text())
    assert "**promote**" in md and "ranker-v2" in md and "0.055000" in md
    assert data["decision"] == "promote" and data["candidate"]["lower"] == pytest.approx(0.055)
    assert data["current_value"] == 0.05


def test_a_better_point_estimate_with_a_wide_interval_keeps_the_current_policy(
    tmp_path: Path,
) -> None:
    decision = promote(_estimate(0.06, 0.02), 0.05, report_dir=tmp_path)
    assert not decision.promote and "not shown to be better" in decision.reason
    assert json.loads((tmp_path / "promotion.json").read_text())["decision"] == "keep current"
    assert "**keep current**" in (tmp_path / "promotion.md").read_text()


def test_margins_raise_the_bar_and_an_estimate_counts_by_its_value() -> None:
    cand = _estimate(0.06, 0.005)  # lower bound 0.055
    assert promote(cand, 0.05, config=PromotionConfig(margin=0.004)).promote
    assert not promote(cand, 0.05, config=PromotionConfig(margin=0.006)).promote
    assert not promote(cand, 0.05, config=PromotionConfig(relative_margin=0.2)).promote
    current = _estimate(0.054, 0.01)
    decision = promote(cand, current)
    assert decision.promote and decision.current_value == 0.054 and decision.current is current
    assert "current" in decision.to_markdown()


def test_the_gate_refuses_missing_numbers() -> None:
    no_interval = Estimate("DR", 0.06, math.nan, math.nan, math.nan, 0.95, 10, 0)
    with pytest.raises(OPEInputError, match="no confidence interval"):
        promote(no_interval, 0.05)
    with pytest.raises(OPEInputError, match="NaN"):
        promote(_estimate(0.06, 0.005), math.nan)
    with pytest.raises(OPEInputError, match="margin"):
        PromotionConfig(margin=-0.1)


def test_on_synthetic_logs_the_better_candidate_passes_and_the_worse_does_not() -> None:
    problem = SyntheticBandit()
    pi = problem.candidates()
    cfg = BootstrapConfig(200)
    refit = ridge_refit()
    for name, better in (("far", True), ("uniform", False)):
        log = problem.sample(5000, seed=3, candidate=pi[name]).log
        current = on_policy_estimate(log, cfg)  # the logging policy, live now
        est = bootstrap_estimate(log, DoublyRobust(), cfg, refit=refit)
        assert (problem.true_value(pi[name]) > problem.true_value(problem.logging)) is better
        assert promote(est, current).promote is better
