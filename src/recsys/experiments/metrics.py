"""The metrics of an experiment, each a per-unit numerator over a per-unit denominator.

* ``ctr``: clicks / impressions over all of an arm's units (a ratio metric: its unit of
  analysis, the user, is not its unit of measurement, the impression);
* ``conversion``: the share of units with at least one conversion;
* ``dwell``: dwell seconds per unit.

A mean metric is a ratio metric whose denominator is 1 for every unit, so one set of
formulas (:mod:`recsys.experiments.stats`) serves all three.

Example:
    >>> import numpy as np
    >>> y, x = METRICS["ctr"].unit_values({"clicks": np.array([1.0, 0.0]),
    ...                                    "impressions": np.array([10.0, 5.0])})
    >>> y.tolist(), x.tolist()
    ([1.0, 0.0], [10.0, 5.0])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

COUNT_COLUMNS: tuple[str, ...] = ("impressions", "clicks", "conversions", "dwell")
"""The per-exposure outcome columns summed per unit."""


@dataclass(frozen=True)
class Metric:
    """One metric.

    Attributes:
        name: its name in configs and reports.
        label: how reports title it.
        numerator: the column summed per unit.
        denominator: the column summed per unit below it, or None (1 per unit).
        binary: the per-unit numerator is 1 when its sum is positive, else 0.
    """

    name: str
    label: str
    numerator: str
    denominator: str | None = None
    binary: bool = False

    def unit_values(self, columns: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Per-unit numerator and denominator values.

        Args:
            columns: per-unit sums by column name (arrays of one shape).

        Returns:
            ``(y, x)``: float arrays of that shape.
        """
        y = np.asarray(columns[self.numerator], dtype=np.float64)
        if self.binary:
            y = (y > 0).astype(np.float64)
        if self.denominator is None:
            return y, np.ones_like(y)
        return y, np.asarray(columns[self.denominator], dtype=np.float64)


METRICS: Mapping[str, Metric] = {
    "ctr": Metric("ctr", "CTR (clicks / impressions)", "clicks", "impressions"),
    "conversion": Metric("conversion", "conversion (share of users)", "conversions", binary=True),
    "dwell": Metric("dwell", "dwell per user (s)", "dwell"),
}
"""The metrics every analysis reports, by name (:data:`recsys.experiments.config.METRIC_NAMES`)."""
