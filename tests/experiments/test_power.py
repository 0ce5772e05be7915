"""Power and sample size against statsmodels, and the planned traffic checked by simulation."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from statsmodels.stats.power import NormalIndPower

from recsys.experiments.power import power_at, required_units
from recsys.experiments.simulate import SimulationConfig
from recsys.experiments.validation import plan_study, power_study


@pytest.mark.parametrize(("variance", "effect", "weights"), [(1.0, 0.1, (0.5, 0.5)),
                         (0.0057, 0.0015, (0.5, 0.5)), (2.0, 0.2, (0.9, 0.1))])  # fmt: skip
def test_power_and_units_match_statsmodels(
    variance: float, effect: float, weights: tuple[float, float]
) -> None:
    units = required_units(variance, effect, 0.05, 0.8, weights)
    wc, wt = weights
    solved = NormalIndPower().solve_power(
        effect_size=effect / math.sqrt(variance), alpha=0.05, power=0.8, ratio=wt / wc
    )  # control units (nobs1); statsmodels keeps both tails, hence the small tolerance
    assert units * wc == pytest.approx(solved, rel=1e-3)
    ref = NormalIndPower().power(
        effect / math.sqrt(variance), nobs1=units * wc, alpha=0.05, ratio=wt / wc
    )
    assert power_at(variance, effect, units, 0.05, weights) == pytest.approx(ref, rel=1e-9)


def test_the_planned_traffic_gives_the_planned_power_in_simulation() -> None:
    config = SimulationConfig()
    plan = plan_study(replace(config, units=400_000), seed=51, lift=0.03)
    assert plan["power_check"] == pytest.approx(0.8, abs=1e-3)
    assert plan["rho2"] >= 0.2 and plan["units_cuped"] < 0.8 * plan["units_plain"]
    units = int(plan["units_plain"])
    r = power_study(replace(config, units=units, lift=0.03), experiments=160, seed=52)
    # 0.8 within simulation error (sd ~0.032 at 160 experiments); far from half the plan's
    assert r["power"] >= 0.8 - 2.5 * r["power_se"]
    assert r["power_cuped"] > r["power"]
    assert r["mean_rel_lift"] == pytest.approx(0.03, abs=0.004)
    half = power_study(replace(config, units=units // 3, lift=0.03), experiments=160, seed=53)
    assert half["power"] < 0.55  # theory: 0.37 at a third of the traffic
