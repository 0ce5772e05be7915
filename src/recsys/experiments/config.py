"""How one experiment is analysed: the ``analysis:`` block of its YAML entry."""

from __future__ import annotations

from dataclasses import dataclass

METRIC_NAMES: tuple[str, ...] = ("ctr", "conversion", "dwell")
"""The metrics every analysis computes (:mod:`recsys.experiments.metrics`)."""


@dataclass(frozen=True)
class AnalysisConfig:
    """The decision rule's settings for one experiment.

    Attributes:
        primary: the metric that decides shipping (one of :data:`METRIC_NAMES`).
        guardrails: metrics that must not get significantly worse.
        alpha: significance level of the tests and 1 - confidence of the intervals.
        srm_alpha: p-value below which the arm counts are a sample-ratio mismatch
            (0.001: with many experiments a looser level flags healthy ones).
        planned_units: exposed units (all arms) of the plan; the experiment keeps
            running before that unless the sequential test has decided. None: no plan.
        mixture_sd: the mSPRT mixture's standard deviation, as a share of the control
            mean (0.05: effects of about 5% are the ones the test is tuned for).
        looks: how many times over the experiment's time range the sequential test
            looks at the data (the report's confidence sequence has that many points).
        cuped: adjust with the pre-period covariate where pre-period data is given.

    Example:
        >>> AnalysisConfig(primary="ctr", guardrails=("dwell",)).alpha
        0.05
    """

    primary: str = "ctr"
    guardrails: tuple[str, ...] = ()
    alpha: float = 0.05
    srm_alpha: float = 0.001
    planned_units: int | None = None
    mixture_sd: float = 0.05
    looks: int = 20
    cuped: bool = True
