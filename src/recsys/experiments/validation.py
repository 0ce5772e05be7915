"""Simulation studies that check the analysis: A/A, SRM, power, CUPED, sequential.

Each study simulates many independent experiments with :mod:`recsys.experiments.simulate`
and runs the same functions the report uses on them, vectorized over experiments:

* :func:`aa_study`: no true effect; the share of experiments with ``p < alpha`` (the
  false-positive rate, which must be about ``alpha``) per metric, with and without
  CUPED; the SRM check's false flags; CUPED's variance reduction.
* :func:`srm_study`: a broken split (e.g. 48/52 against a 50/50 design); the share of
  experiments the SRM check flags.
* :func:`plan_study`: a large pilot estimates the per-unit variance of CTR and the
  pre-period correlation, and from them the units needed for a power at a lift.
* :func:`power_study`: a true lift at a given traffic; the share of experiments that
  detect it (power), with and without CUPED.
* :func:`sequential_study`: the mSPRT looked at ``looks`` times per experiment: its
  rejection rate (at most ``alpha`` under A/A however often one looks), the coverage of
  its confidence sequence, how early it stops, and for contrast the rejection rate of a
  fixed-horizon test read at every look ("peeking").

Every study returns plain floats (JSON-ready).

Example:
    >>> r = aa_study(SimulationConfig(units=2000), experiments=50, seed=3)
    >>> 0.0 <= r["fpr_ctr"] <= 0.2
    True
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from recsys.experiments.power import power_at, required_units
from recsys.experiments.sequential import sequential_compare
from recsys.experiments.simulate import SimulationConfig, simulate_moments
from recsys.experiments.srm import srm_check
from recsys.experiments.stats import compare, pooled_theta, summarize

_METRICS = ("ctr", "conversion", "dwell")


def binomial_se(rate: float, trials: int) -> float:
    """Standard error of a simulated rate: ``sqrt(rate (1 - rate) / trials)``."""
    return math.sqrt(max(rate * (1 - rate), 1e-12) / trials)


def true_ctr_diff(config: SimulationConfig) -> float:
    """The simulated population's true CTR difference, treatment - control.

    Activity and CTR are independent, so the ratio of expected sums is
    ``E[p (1 + lift)] - E[p] = lift * a / (a + b)`` (capping ``p`` at 1 is negligible).
    """
    return config.lift * config.ctr_a / (config.ctr_a + config.ctr_b)


def aa_study(
    config: SimulationConfig, experiments: int, seed: int, alpha: float = 0.05
) -> dict[str, float]:
    """False positives of every metric under A/A (``config.lift`` is ignored).

    Args:
        config: the population (``lift`` set to 0).
        experiments: simulated experiments.
        seed: root seed.
        alpha: the level.

    Returns:
        ``fpr_<metric>``, ``fpr_<metric>_cuped``, ``variance_reduction_<metric>`` (mean
        over experiments), ``srm_false_flags``, ``experiments``, ``units``.
    """
    moments = simulate_moments(replace(config, lift=0.0), experiments, seed)
    out: dict[str, float] = {"experiments": float(experiments), "units": float(config.units)}
    for name, (c, t) in moments.items():
        c1, t1 = c.select(0, 1), t.select(0, 1)
        plain = compare(c1, t1, alpha)
        adjusted = compare(c1, t1, alpha, cuped=True)
        out[f"fpr_{name}"] = float(np.mean(plain.p_value < alpha))
        out[f"fpr_{name}_cuped"] = float(np.mean(adjusted.p_value < alpha))
        out[f"variance_reduction_{name}"] = float(np.mean(adjusted.variance_reduction))
    c1, t1 = moments["ctr"][0].select(0, 1), moments["ctr"][1].select(0, 1)
    counts = np.stack([c1.n, t1.n], axis=-1)
    out["srm_false_flags"] = float(np.mean(srm_check(counts, config.weights).flagged))
    return out


def srm_study(
    config: SimulationConfig,
    experiments: int,
    seed: int,
    design: tuple[float, float] = (0.5, 0.5),
    alpha: float = 0.001,
) -> dict[str, float]:
    """How often the SRM check flags a split of ``config.weights`` against ``design``.

    Args:
        config: the population, with the actual (broken) split in ``weights``.
        experiments: simulated experiments.
        seed: root seed.
        design: the designed weights.
        alpha: the SRM level.

    Returns:
        ``flag_rate``, ``median_p_value``, ``experiments``, ``units``.
    """
    c, t = simulate_moments(config, experiments, seed, metrics=("ctr",))["ctr"]
    counts = np.stack([c.select(0, 1).n, t.select(0, 1).n], axis=-1)
    result = srm_check(counts, design, alpha)
    return {
        "flag_rate": float(np.mean(result.flagged)),
        "median_p_value": float(np.median(result.p_value)),
        "experiments": float(experiments),
        "units": float(config.units),
    }


def plan_study(
    config: SimulationConfig,
    seed: int,
    lift: float = 0.03,
    alpha: float = 0.05,
    power: float = 0.8,
) -> dict[str, float]:
    """The traffic needed to detect a relative CTR lift, from one large A/A pilot.

    The pilot's per-unit variance of linearized CTR (pooled over arms) and its control
    CTR give the absolute effect ``lift * CTR``; CUPED's plan multiplies the variance
    by ``1 - rho^2`` measured on the same pilot. Units are *simulated* users, of whom
    the observed (exposed) share enters the analysis: the plan is in simulated users.

    Args:
        config: the population (``config.units`` is the pilot's size).
        seed: the pilot's seed.
        lift: the relative CTR lift to detect.
        alpha: the level.
        power: the wanted power.

    Returns:
        ``ctr``, ``effect``, ``unit_variance``, ``observed_share``, ``rho2``,
        ``units_plain``, ``units_cuped`` (simulated users, both arms), ``power_check``
        (the formula's power at ``units_plain``).
    """
    c, t = simulate_moments(replace(config, lift=0.0), 1, seed, metrics=("ctr",))["ctr"]
    cs, ts = summarize(c.select(0, 1)), summarize(t.select(0, 1))
    n = float(cs.n[0] + ts.n[0])
    unit_var = float((cs.n[0] * cs.unit_var[0] + ts.n[0] * ts.unit_var[0]) / n)
    theta = pooled_theta(cs, ts)
    adjusted = [a.unit_var - 2 * theta * a.pre_cov + theta**2 * a.pre_var for a in (cs, ts)]
    adj_var = float((cs.n[0] * adjusted[0][0] + ts.n[0] * adjusted[1][0]) / n)
    observed = n / config.units
    ctr = float(cs.mean[0])
    effect = lift * ctr
    # the formula counts observed units; a simulated user is observed with `observed`
    plain = math.ceil(required_units(unit_var, effect, alpha, power, config.weights) / observed)
    cuped = math.ceil(required_units(adj_var, effect, alpha, power, config.weights) / observed)
    return {
        "ctr": ctr,
        "effect": effect,
        "unit_variance": unit_var,
        "observed_share": observed,
        "rho2": 1 - adj_var / unit_var,
        "units_plain": float(plain),
        "units_cuped": float(cuped),
        "power_check": power_at(unit_var, effect, round(plain * observed), alpha, config.weights),
    }


def power_study(
    config: SimulationConfig, experiments: int, seed: int, alpha: float = 0.05
) -> dict[str, float]:
    """The share of experiments that detect ``config.lift`` on CTR at ``config.units``.

    Args:
        config: the population, lift and traffic.
        experiments: simulated experiments.
        seed: root seed.
        alpha: the level.

    Returns:
        ``power``, ``power_cuped``, ``power_se`` (simulation error), ``mean_rel_lift``,
        ``variance_reduction``, ``ci_coverage`` (share of intervals holding the true
        lift), ``experiments``, ``units``.
    """
    c, t = simulate_moments(config, experiments, seed, metrics=("ctr",))["ctr"]
    c1, t1 = c.select(0, 1), t.select(0, 1)
    plain = compare(c1, t1, alpha)
    adjusted = compare(c1, t1, alpha, cuped=True)
    truth = true_ctr_diff(config)
    power = float(np.mean((plain.p_value < alpha) & (plain.diff > 0)))
    return {
        "power": power,
        "power_cuped": float(np.mean((adjusted.p_value < alpha) & (adjusted.diff > 0))),
        "power_se": binomial_se(power, experiments),
        "mean_rel_lift": float(np.mean(plain.rel)),
        "variance_reduction": float(np.mean(adjusted.variance_reduction)),
        "ci_coverage": float(np.mean((plain.ci_low <= truth) & (truth <= plain.ci_high))),
        "experiments": float(experiments),
        "units": float(config.units),
    }


def sequential_study(
    config: SimulationConfig,
    experiments: int,
    seed: int,
    looks: int = 50,
    alpha: float = 0.05,
    mixture_sd: float = 0.05,
    cuped: bool = False,
) -> dict[str, float]:
    """The mSPRT on CTR, monitored at ``looks`` equally spaced looks per experiment.

    Args:
        config: the population, lift and traffic (``units`` divisible by ``looks``).
        experiments: simulated experiments.
        seed: root seed.
        looks: looks per experiment.
        alpha: the level.
        mixture_sd: the mixture's sd as a share of the control CTR.
        cuped: test the CUPED-adjusted estimate.

    Returns:
        ``rejection_rate`` (any look), ``cs_coverage`` (share whose confidence sequence
        holds the true lift at every look), ``mean_stop_fraction`` (of the traffic, among
        the rejecting experiments), ``expected_sample_fraction`` (of the traffic, over all
        experiments: one that never rejects runs to the end), ``stopped_before_half``,
        ``peeking_rejection_rate`` (fixed-horizon p < alpha at any look),
        ``fixed_horizon_rejection_rate`` (at the last look only), ``experiments``, ``units``,
        ``looks``.
    """
    c, t = simulate_moments(config, experiments, seed, looks=looks, metrics=("ctr",))["ctr"]
    seq, comp = sequential_compare(c, t, mixture_sd, alpha, cuped)
    truth = true_ctr_diff(config)
    covered = np.all((seq.lower <= truth) & (truth <= seq.upper), axis=-1)
    first = np.asarray(seq.first_rejection)
    rejected = first >= 0
    stop = (first[rejected] + 1) / looks
    return {
        "rejection_rate": float(np.mean(rejected)),
        "cs_coverage": float(np.mean(covered)),
        "mean_stop_fraction": float(np.mean(stop)) if stop.size else float("nan"),
        "expected_sample_fraction": float(np.mean(np.where(rejected, (first + 1) / looks, 1.0))),
        "stopped_before_half": float(np.mean(rejected & (first + 1 <= looks // 2))),
        "peeking_rejection_rate": float(np.mean(np.any(comp.p_value < alpha, axis=-1))),
        "fixed_horizon_rejection_rate": float(np.mean(comp.p_value[..., -1] < alpha)),
        "experiments": float(experiments),
        "units": float(config.units),
        "looks": float(looks),
    }
