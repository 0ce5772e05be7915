"""How one experiment is analysed: the ``analysis:`` block of its YAML entry."""

from __future__ import annotations

import math
from dataclasses import dataclass

METRIC_NAMES: tuple[str, ...] = ("ctr", "conversion", "dwell")
"""The metrics every analysis computes (:mod:`recsys.experiments.metrics`)."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
        mde: the relative lift of the primary metric the experiment must detect (0.03:
            +3%); the report gives the power at the traffic so far and the units needed
            for ``power`` at this lift. None: the report gives only the smallest lift
            detectable at the traffic so far.
        power: the wanted power of the test at ``mde``, in (0, 1).

    Raises:
        ValueError: ``mde`` is not a positive number or ``power`` is not in (0, 1).

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
    mde: float | None = None
    power: float = 0.8

    def __post_init__(self) -> None:
        if self.mde is not None and not (
            _is_number(self.mde) and math.isfinite(self.mde) and self.mde > 0
        ):
            raise ValueError(
                f"mde (the relative lift to detect, e.g. 0.03) must be a number > 0, "
                f"got {self.mde!r}"
            )
        if not (_is_number(self.power) and 0 < self.power < 1):
            raise ValueError(
                f"power (the wanted power) must be a number in (0, 1), got {self.power!r}"
            )
