"""The report's Power section: the same numbers as the formulas, statsmodels' sample size,
the recommended traffic checked by simulation, and the ``mde`` / ``power`` settings."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.power import NormalIndPower

from recsys.experiments import ExperimentConfigError, load_experiments, load_experiments_text
from recsys.experiments.analysis import analyze
from recsys.experiments.config import AnalysisConfig
from recsys.experiments.data import unit_table
from recsys.experiments.power import detectable_effect, power_at, required_units
from recsys.experiments.report import write_report
from recsys.experiments.simulate import SimulationConfig, simulate_tables
from recsys.experiments.stats import pooled_theta, summarize
from recsys.experiments.validation import power_study
from recsys.runtime.experiments import Arm, Experiment

REPO = Path(__file__).resolve().parents[2]
ARMS = (Arm("control", 1), Arm("treatment", 1))
DESIGN = Experiment("simulated", "l", 0, 9999, 1.0, ARMS, "l/simulated")
THREE = Experiment("simulated", "l", 0, 9999, 1.0, (Arm("control", 2), Arm("treatment", 1),
                   Arm("other", 1)), "l/simulated")  # fmt: skip
PILOT_USERS = 30_000


@pytest.fixture(scope="module")
def pilot() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A pilot with the true +3% CTR lift, smaller than the traffic the lift needs."""
    return simulate_tables(SimulationConfig(units=PILOT_USERS, lift=0.03), seed=91)


def by_hand(
    exposures: pd.DataFrame,
    pre: pd.DataFrame | None,
    arms: tuple[str, ...],
    treatment: int,
    metric: str = "ctr",
) -> tuple[float, float, int, int]:
    """Pooled per-unit variance (CUPED-adjusted with a pre-period), control mean, units."""
    table = unit_table(exposures, arms, pre)
    m = table.moments(metric)
    c, t = summarize(m[0]), summarize(m[treatment])
    theta = pooled_theta(c, t) if pre is not None else 0.0
    vc, vt = (float(a.unit_var - 2 * theta * a.pre_cov + theta**2 * a.pre_var) for a in (c, t))
    nc, nt = int(c.n), int(t.n)
    return (nc * vc + nt * vt) / (nc + nt), float(c.mean), nc, nt


@pytest.mark.parametrize("with_pre", [True, False])
def test_the_reported_power_is_the_formulas_on_the_same_data(
    pilot: tuple[pd.DataFrame, pd.DataFrame], with_pre: bool
) -> None:
    exposures, pre_table = pilot
    pre = pre_table if with_pre else None
    config = AnalysisConfig(guardrails=("dwell",), looks=2, mde=0.03, planned_units=80_000)
    a = analyze(exposures, DESIGN, config, pre)
    p = a.power_of("ctr")
    assert [q.metric for q in a.power] == ["ctr", "dwell"]
    variance, ctr, nc, nt = by_hand(exposures, pre, ("control", "treatment"), 1)
    effect = 0.03 * ctr
    assert p.cuped is with_pre
    assert p.unit_variance == pytest.approx(variance, rel=1e-9)
    assert p.control_mean == pytest.approx(ctr, rel=1e-12)
    assert (p.n_control, p.n_treatment, p.units) == (nc, nt, a.units)
    assert p.power == pytest.approx(power_at(variance, effect, nc + nt, 0.05, (nc, nt)), rel=1e-9)
    assert p.required_units == required_units(variance, effect, 0.05, 0.8, (0.5, 0.5))
    detectable = detectable_effect(variance, nc + nt, 0.05, 0.8, (nc, nt)) / ctr
    assert p.detectable == pytest.approx(detectable, rel=1e-9)
    assert p.planned_power == pytest.approx(power_at(variance, effect, 80_000), rel=1e-9)
    # the variance is the one the test's standard error comes from
    best = a.result("ctr").best
    assert float(best.se) ** 2 == pytest.approx(variance * (1 / nc + 1 / nt), rel=0.02)
    # at the units it recommends, the detectable lift is the planned one
    at_plan = detectable_effect(variance, p.required_units, 0.05, 0.8) / ctr
    assert at_plan == pytest.approx(0.03, rel=1e-3)
    assert p.reached is False and (p.power or 1.0) < 0.8
    dwell_var, dwell_c, _, _ = by_hand(exposures, pre, ("control", "treatment"), 1, "dwell")
    d = a.power_of("dwell")
    assert d.required_units == required_units(dwell_var, 0.03 * dwell_c, 0.05, 0.8)


def test_units_needed_match_statsmodels_with_three_arms(
    pilot: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    exposures, pre = pilot
    # half the treatment's units become a third arm: shares 2/4, 1/4, 1/4 as designed
    units = exposures.loc[exposures["arm"] == "treatment", "unit"].unique()
    moved = exposures["unit"].isin(set(units[::2]))
    three = exposures.assign(arm=np.where(moved, "other", exposures["arm"]))
    a = analyze(three, THREE, AnalysisConfig(looks=2, mde=0.03), pre)
    level = 0.05 / 2  # Bonferroni over two treatment arms
    for k, arm in ((1, "treatment"), (2, "other")):
        p = a.power_of("ctr", arm)
        variance, ctr, nc, nt = by_hand(three, pre, ("control", "treatment", "other"), k)
        assert p.alpha == level and p.unit_variance == pytest.approx(variance, rel=1e-9)
        solved = NormalIndPower().solve_power(
            effect_size=0.03 * ctr / math.sqrt(variance), alpha=level, power=0.8, ratio=0.5
        )  # control units; the control holds half of all units
        assert p.required_units == pytest.approx(solved / 0.5, rel=0.01)
        ref = NormalIndPower().power(
            0.03 * ctr / math.sqrt(variance), nobs1=nc, alpha=level, ratio=nt / nc
        )
        assert p.power == pytest.approx(ref, rel=1e-6)
    needs = [p.required_units or 0 for p in a.power]
    assert f"the {max(needs):,} units (all arms)" in write_report(a, tmp_path).read_text()


def test_the_recommended_traffic_gives_the_power_in_simulation(
    pilot: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    exposures, pre = pilot
    a = analyze(exposures, DESIGN, AnalysisConfig(looks=2, mde=0.03), pre)
    p = a.power_of("ctr")
    assert p.cuped and p.required_units is not None
    # the report counts exposed units; a simulated user is exposed with this share
    users = math.ceil(p.required_units / (a.units / PILOT_USERS))
    assert 40_000 < users < 70_000  # the benchmark's plan from a pilot of 1e6: 52,864
    experiments = 400
    r = power_study(SimulationConfig(units=users, lift=0.03), experiments=experiments, seed=92)
    se = math.sqrt(0.8 * 0.2 / experiments)
    assert r["power_cuped"] >= 0.8 - 3 * se, r
    assert r["power_cuped"] <= 0.8 + 3 * se, r  # sized for 0.8, not far more


def test_the_report_has_the_power_section_and_json(
    pilot: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    exposures, pre = pilot
    config = AnalysisConfig(guardrails=("dwell",), looks=2, mde=0.03, planned_units=80_000)
    a = analyze(exposures, DESIGN, config, pre)
    p = a.power_of("ctr")
    text = write_report(a, tmp_path / "with").read_text()
    assert "## Power" in text
    assert (
        f"The {a.units:,} units so far **do not reach** the {p.required_units:,} units "
        "(all arms) needed for power 80% at a +3.00% lift of `ctr`"
    ) in text
    assert f"power so far {p.power:.3f}" in text
    assert f"`planned_units` (80,000) give power {p.planned_power:.3f}" in text
    assert "| CTR (clicks / impressions) | treatment | CUPED-adjusted |" in text
    data = json.loads((tmp_path / "with" / "analysis.json").read_text())
    ctr = next(q for q in data["power"] if q["metric"] == "ctr")
    assert ctr["required_units"] == p.required_units and ctr["reached"] is False
    assert ctr["power"] == pytest.approx(p.power) and ctr["mde"] == 0.03
    # enough traffic: the plan is reached
    done = analyze(exposures, DESIGN, replace(config, mde=0.2), pre)
    assert done.power_of("ctr").reached is True
    assert "units so far **reach** the" in write_report(done, tmp_path / "done").read_text()
    # without mde: only the detectable lift
    bare = analyze(exposures, DESIGN, AnalysisConfig(looks=2), pre)
    q = bare.power_of("ctr")
    assert q.power is None and q.required_units is None and q.reached is None
    text = write_report(bare, tmp_path / "bare").read_text()
    assert (
        f"No `mde` is set: at the {bare.units:,} units so far the smallest relative lift "
        f"of `ctr` detected with power 80% is {q.detectable:.2%}"
    ) in text
    data = json.loads((tmp_path / "bare" / "analysis.json").read_text())
    assert data["power"][0]["mde"] is None and data["power"][0]["required_units"] is None


def test_too_few_units_give_no_power(tmp_path: Path) -> None:
    exposures, pre = simulate_tables(SimulationConfig(units=4), seed=93)
    a = analyze(exposures.drop(columns="timestamp"), DESIGN, AnalysisConfig(mde=0.03), pre)
    assert all(p.power is None and math.isnan(p.detectable) for p in a.power)
    assert "cannot be estimated" in write_report(a, tmp_path).read_text()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mde": 0.0}, "mde"),
        ({"mde": -0.03}, "mde"),
        ({"mde": math.nan}, "mde"),
        ({"mde": True}, "mde"),
        ({"power": 1.0}, "power"),
        ({"power": 0.0}, "power"),
        ({"power": 80}, "power"),
    ],
)
def test_bad_mde_and_power_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=rf"^{message} \(.*\) must be a number .*, got "):
        AnalysisConfig(**kwargs)  # type: ignore[arg-type]


MDE = "mde (the relative lift to detect, e.g. 0.03)"
EXPERIMENT = (
    "layers:\n  - name: l\n    experiments:\n      - name: a\n"
    "        arms: [{name: c, weight: 1}, {name: t, weight: 1, policy: p}]\n"
    "        analysis:\n"
)


@pytest.mark.parametrize(
    ("line", "column", "message"),
    [
        ("mde: 0", 16, f"{MDE} must be a number > 0, got 0"),
        ("mde: -0.03", 16, f"{MDE} must be a number > 0, got -0.03"),
        ("mde: .inf", 16, f"{MDE} must be a number > 0, got inf"),
        ("mde: three", 16, f"{MDE} must be a number > 0, got 'three'"),
        ("mde: true", 16, f"{MDE} must be a number > 0, got True"),
        ("power: 1", 18, "power (the wanted power) must be a number in (0, 1), got 1"),
        ("power: 80", 18, "power (the wanted power) must be a number in (0, 1), got 80"),
        ("power: [0.8]", 18, "power (the wanted power) must be a single value"),
    ],
)
def test_the_loader_locates_bad_mde_and_power(line: str, column: int, message: str) -> None:
    with pytest.raises(ExperimentConfigError) as info:
        load_experiments_text(EXPERIMENT + f"          {line}\n", "ab.yaml")
    e = info.value
    assert (e.source, e.line, e.column) == ("ab.yaml", 7, column), e
    assert e.message == f"layer 'l': experiment 'a': {message}", e


def test_the_loader_reads_mde_and_power() -> None:
    loaded = load_experiments_text(EXPERIMENT + "          {mde: 0.05, power: 0.9}\n")
    config = loaded.analysis["a"]
    assert (config.mde, config.power) == (0.05, 0.9)
    defaults = load_experiments_text(EXPERIMENT + "          {mde: null}\n").analysis["a"]
    assert (defaults.mde, defaults.power) == (None, 0.8)
    example = load_experiments(REPO / "configs" / "experiments" / "example.yaml").analysis
    assert (example["explore_eps10"].mde, example["explore_eps10"].power) == (0.03, 0.8)
    assert example["ranker_v2"].mde is None
