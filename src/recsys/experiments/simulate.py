"""A small seeded simulator of users in an experiment, with a pre-period of the same users.

Each user has, for the whole simulation, an activity rate ``lambda ~ Gamma(k, mean/k)``,
a base CTR ``p ~ Beta(a, b)``, a per-click conversion probability ``q ~ Beta(.,.)`` and
a mean dwell per click ``delta ~ Gamma(.,.)``. In each period (pre and experiment):
impressions ``~ Poisson(lambda)`` (so negative binomial over users), clicks
``~ Binomial(impressions, p (1 + lift))`` where the lift applies to the treatment in the
experiment period only, conversions ``~ Binomial(clicks, q)`` and dwell
``~ Gamma(clicks, delta)`` (the sum of ``clicks`` exponential dwells). Heavy users stay
heavy and good clickers stay good across periods, which is what makes the pre-period a
useful CUPED covariate. Users are assigned to treatment with probability ``weights[1]``
(a 0.48/0.52 split injects a sample-ratio mismatch), and only users with at least one
impression in the experiment period are observed (exposure logs see nobody else).

:func:`simulate_users` draws arrays of shape ``(experiments, units)``;
:func:`simulate_moments` reduces them chunk by chunk to per-arm, per-look moments (users
arrive in index order, ``looks`` equal groups); :func:`simulate_tables` writes one
experiment as the exposure and pre-period tables the report reads.

Example:
    >>> users = simulate_users(SimulationConfig(units=1000), experiments=2, seed=7)
    >>> users.impressions.shape, bool(users.clicks.sum() > 0)
    ((2, 1000), True)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.experiments.metrics import METRICS
from recsys.experiments.moments import Moments


@dataclass(frozen=True)
class SimulationConfig:
    """The simulated population and experiment.

    Attributes:
        units: users per simulated experiment.
        ctr_a: Beta ``a`` of a user's base CTR (mean ``a / (a + b)``).
        ctr_b: Beta ``b``.
        impressions_mean: mean impressions per user per period.
        activity_shape: Gamma shape of the activity rate (lower: more dispersed).
        conversion_a: Beta ``a`` of the per-click conversion probability.
        conversion_b: Beta ``b``.
        dwell_per_click: mean dwell seconds per click.
        dwell_shape: Gamma shape of a user's mean dwell per click.
        weights: actual control and treatment assignment shares.
        lift: true relative CTR lift of the treatment.
    """

    units: int = 20_000
    ctr_a: float = 1.0
    ctr_b: float = 19.0
    impressions_mean: float = 20.0
    activity_shape: float = 2.0
    conversion_a: float = 2.0
    conversion_b: float = 18.0
    dwell_per_click: float = 30.0
    dwell_shape: float = 2.0
    weights: tuple[float, float] = (0.5, 0.5)
    lift: float = 0.0


@dataclass(frozen=True)
class SimulatedUsers:
    """Per-user outcomes, arrays of shape ``(experiments, units)``.

    Attributes:
        treatment: 1 for the treatment arm, 0 for control.
        observed: the user had an impression in the experiment period.
        impressions: experiment-period impressions (also clicks, conversions, dwell).
        pre: the pre-period's ``impressions, clicks, conversions, dwell`` by name.
    """

    treatment: np.ndarray
    observed: np.ndarray
    impressions: np.ndarray
    clicks: np.ndarray
    conversions: np.ndarray
    dwell: np.ndarray
    pre: dict[str, np.ndarray]

    def columns(self) -> dict[str, np.ndarray]:
        """The experiment period's columns by name."""
        return {
            "impressions": self.impressions,
            "clicks": self.clicks,
            "conversions": self.conversions,
            "dwell": self.dwell,
        }


def simulate_users(
    config: SimulationConfig,
    experiments: int,
    seed: int | np.random.SeedSequence,
    outcomes: bool = True,
) -> SimulatedUsers:
    """Draws the users of ``experiments`` independent simulated experiments.

    Args:
        config: the population and experiment.
        experiments: how many experiments.
        seed: the generator's seed.
        outcomes: also draw conversions and dwell (False: zeros, about twice as fast).
            They come from a stream of their own, so impressions and clicks are the
            same either way.

    Returns:
        The :class:`SimulatedUsers`.
    """
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    main, extra = (np.random.default_rng(s) for s in root.spawn(2))
    shape = (experiments, config.units)
    rate = main.gamma(config.activity_shape, config.impressions_mean / config.activity_shape, shape)
    ctr = main.beta(config.ctr_a, config.ctr_b, shape)
    share = config.weights[1] / (config.weights[0] + config.weights[1])
    treatment = (main.random(shape) < share).astype(np.int8)
    if outcomes:
        conv = extra.beta(config.conversion_a, config.conversion_b, shape)
        mean_dwell = config.dwell_per_click / config.dwell_shape
        dwell_rate = extra.gamma(config.dwell_shape, mean_dwell, shape)

    def period(p_click: np.ndarray) -> dict[str, np.ndarray]:
        imp = main.poisson(rate)
        clicks = main.binomial(imp, p_click)
        if not outcomes:
            return {"impressions": imp, "clicks": clicks,
                    "conversions": np.zeros_like(clicks), "dwell": np.zeros(shape)}  # fmt: skip
        return {
            "impressions": imp,
            "clicks": clicks,
            "conversions": extra.binomial(clicks, conv),
            "dwell": extra.gamma(clicks, dwell_rate),  # shape 0 gives 0: no clicks, no dwell
        }

    pre = period(ctr)
    post = period(np.minimum(1.0, ctr * (1.0 + config.lift * treatment)))
    return SimulatedUsers(
        treatment=treatment,
        observed=post["impressions"] > 0,
        impressions=post["impressions"],
        clicks=post["clicks"],
        conversions=post["conversions"],
        dwell=post["dwell"],
        pre=pre,
    )


def arm_moments(users: SimulatedUsers, metric: str, looks: int = 1) -> tuple[Moments, Moments]:
    """Cumulative per-look moments of one metric for control and treatment.

    Args:
        users: simulated users (units divisible by ``looks``).
        metric: a name of :data:`recsys.experiments.metrics.METRICS`.
        looks: equal arrival groups; look ``j`` holds the first ``j + 1`` groups.

    Returns:
        ``(control, treatment)`` moments of shape ``(experiments, looks)``.
    """
    e, u = users.impressions.shape
    if u % looks:
        raise ValueError(f"units ({u}) must be a multiple of looks ({looks})")
    y, x = METRICS[metric].unit_values(users.columns())
    yp, xp = METRICS[metric].unit_values(users.pre)
    shape = (e, looks, u // looks)
    ys, xs, yps, xps = (a.reshape(shape) for a in (y, x, yp, xp))
    observed = users.observed.reshape(shape)
    treated = users.treatment.reshape(shape).astype(bool)
    ctrl = Moments.of(ys, xs, yps, xps, weights=observed & ~treated).cumsum(axis=1)
    trt = Moments.of(ys, xs, yps, xps, weights=observed & treated).cumsum(axis=1)
    return ctrl, trt


def _concat(chunks: list[Moments]) -> Moments:
    return Moments(
        np.concatenate([c.n for c in chunks]),
        np.concatenate([c.sums for c in chunks]),
        np.concatenate([c.cross for c in chunks]),
    )


def iter_chunks(
    config: SimulationConfig,
    experiments: int,
    seed: int,
    chunk: int = 20,
    outcomes: bool = True,
) -> Iterator[SimulatedUsers]:
    """The experiments in chunks of ``chunk``, each from its own child seed.

    Args:
        config: the population and experiment.
        experiments: how many experiments in all.
        seed: the root seed (the same seed and chunk size give the same draws).
        chunk: experiments per chunk (memory: about 100 bytes per user).
        outcomes: also draw conversions and dwell.

    Yields:
        :class:`SimulatedUsers` of up to ``chunk`` experiments.
    """
    n_chunks = -(-experiments // chunk)
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(n_chunks)):
        yield simulate_users(config, min(chunk, experiments - i * chunk), child, outcomes)


def simulate_moments(
    config: SimulationConfig,
    experiments: int,
    seed: int,
    looks: int = 1,
    metrics: tuple[str, ...] = ("ctr", "conversion", "dwell"),
    chunk: int = 20,
) -> dict[str, tuple[Moments, Moments]]:
    """Per-arm, per-look moments of many simulated experiments.

    Args:
        config: the population and experiment.
        experiments: how many experiments.
        seed: root seed.
        looks: looks of each experiment (see :func:`arm_moments`).
        metrics: which metrics.
        chunk: experiments simulated at once.

    Returns:
        metric -> ``(control, treatment)`` moments of shape ``(experiments, looks)``.

    Example:
        >>> m = simulate_moments(SimulationConfig(units=500), 3, seed=1, metrics=("ctr",))
        >>> m["ctr"][0].n.shape
        (3, 1)
    """
    parts: dict[str, tuple[list[Moments], list[Moments]]] = {m: ([], []) for m in metrics}
    outcomes = bool({"conversion", "dwell"} & set(metrics))
    for users in iter_chunks(config, experiments, seed, chunk, outcomes):
        for m in metrics:
            c, t = arm_moments(users, m, looks)
            parts[m][0].append(c)
            parts[m][1].append(t)
    return {m: (_concat(c), _concat(t)) for m, (c, t) in parts.items()}


def simulate_tables(
    config: SimulationConfig,
    seed: int,
    days: float = 14.0,
    list_length: int = 10,
    start_s: float = 1_765_000_000.0,
    arms: tuple[str, str] = ("control", "treatment"),
    experiment: str = "simulated",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One simulated experiment as an exposure table and a pre-period table.

    Each user arrives at a uniform time in the experiment, is shown a first list of
    ``list_length`` items then and the others at uniform times until the end, one
    exposure row per list, with the user's clicks, conversions and dwell attributed to
    its lists at random.

    Args:
        config: the population and experiment.
        seed: the generator's seed.
        days: the experiment's length.
        list_length: impressions per exposure row (the last row of a user takes the rest).
        start_s: the experiment's start (epoch seconds).
        arms: the control and treatment arm names.
        experiment: the ``experiment`` column's value.

    Returns:
        ``(exposures, pre)``: exposures with columns ``unit, experiment, arm,
        timestamp, impressions, clicks, conversions, dwell``; the pre-period's per-unit
        sums ``unit, impressions, clicks, conversions, dwell``.
    """
    users = simulate_users(config, 1, seed)
    rng = np.random.default_rng([seed, 1])
    ids = np.array([f"u{i:07d}" for i in range(config.units)])
    obs = users.observed[0]
    imp = users.impressions[0][obs]
    rows_per = -(-imp // list_length)  # ceil
    owner = np.repeat(np.arange(len(imp)), rows_per)
    first_row = np.concatenate([[0], np.cumsum(rows_per)[:-1]])
    within = np.arange(len(owner)) - first_row[owner]
    row_imp = np.minimum(list_length, imp[owner] - within * list_length)

    # each click lands on one of its user's rows, uniformly; the user's conversions are
    # a random subset of its clicks, so no row converts more than it clicked
    clicks = users.clicks[0][obs]
    who = np.repeat(np.arange(len(clicks)), clicks)
    click_row = first_row[who] + (rng.random(len(who)) * rows_per[who]).astype(np.int64)
    row_clicks = np.bincount(click_row, minlength=len(owner))
    order = np.lexsort((rng.random(len(who)), who))
    first_click = np.concatenate([[0], np.cumsum(clicks)[:-1]])
    rank = np.arange(len(who)) - first_click[who[order]]
    converts = rank < users.conversions[0][obs][who[order]]
    row_conv = np.bincount(click_row[order][converts], minlength=len(owner))
    dwell_per_click = np.where(clicks > 0, users.dwell[0][obs] / np.maximum(clicks, 1), 0.0)
    horizon = days * 86_400.0
    arrival = rng.random(len(imp)) * horizon
    # the first list at arrival, the others uniformly between arrival and the end
    at = arrival[owner] + rng.random(len(owner)) * (horizon - arrival[owner]) * (within > 0)
    exposures = pd.DataFrame(
        {
            "unit": ids[obs][owner],
            "experiment": experiment,
            "arm": np.array(arms)[users.treatment[0][obs][owner]],
            "timestamp": start_s + at,
            "impressions": row_imp,
            "clicks": row_clicks,
            "conversions": row_conv,
            "dwell": row_clicks * dwell_per_click[owner],
        }
    ).sort_values("timestamp", kind="stable", ignore_index=True)
    had_pre = users.pre["impressions"][0] > 0
    pre = pd.DataFrame({"unit": ids[had_pre], **{k: v[0][had_pre] for k, v in users.pre.items()}})
    return exposures, pre
