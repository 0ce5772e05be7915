"""Per-arm sufficient statistics: every estimate of :mod:`recsys.experiments.stats` reads them.

For each unit four values ``v = (y, x, y_pre, x_pre)`` (the metric's numerator and
denominator in the experiment and in the pre-period) enter three sums: the count
``n``, ``sum v`` and ``sum v v^T``. Means, covariances, ratios and their delta-method
variances follow from these, so an arm summarised once can be compared any way, the
sums of two chunks add, and cumulative sums over time give every look of a sequential
test. Any leading axes (simulated experiments, looks) broadcast through.

Example:
    >>> import numpy as np
    >>> m = Moments.of(np.array([1.0, 2.0, 3.0]), np.ones(3))
    >>> float(m.n), m.mean[0].item(), m.cov[0, 0].item()
    (3.0, 2.0, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Moments:
    """Count, sums and cross sums of ``(y, x, y_pre, x_pre)`` over units.

    Attributes:
        n: units, shape ``S`` (any leading shape).
        sums: ``sum v``, shape ``S + (4,)``.
        cross: ``sum v v^T``, shape ``S + (4, 4)``.
    """

    n: np.ndarray
    sums: np.ndarray
    cross: np.ndarray

    @classmethod
    def of(
        cls,
        y: np.ndarray,
        x: np.ndarray,
        y_pre: np.ndarray | None = None,
        x_pre: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> Moments:
        """The moments of units along the last axis.

        Args:
            y: metric numerators, shape ``S + (units,)``.
            x: denominators (ones for a mean metric).
            y_pre: pre-period numerators (None: zeros, no pre-period).
            x_pre: pre-period denominators (None: zeros).
            weights: per-unit weights, e.g. a 0/1 mask of an arm's units (None: ones).

        Returns:
            Moments of shape ``S``.
        """
        zeros = np.zeros_like(y, dtype=np.float64)
        v = np.stack(
            [
                np.asarray(y, np.float64),
                np.asarray(x, np.float64),
                zeros if y_pre is None else np.asarray(y_pre, np.float64),
                zeros if x_pre is None else np.asarray(x_pre, np.float64),
            ],
            axis=-1,
        )
        w = np.ones(v.shape[:-1]) if weights is None else np.asarray(weights, np.float64)
        vw = v * w[..., None]
        return cls(w.sum(axis=-1), vw.sum(axis=-2), np.swapaxes(vw, -1, -2) @ v)

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.n + other.n, self.sums + other.sums, self.cross + other.cross)

    def cumsum(self, axis: int) -> Moments:
        """Running sums along a leading axis (``axis`` counts leading axes only, >= 0)."""
        return Moments(
            np.cumsum(self.n, axis=axis),
            np.cumsum(self.sums, axis=axis),
            np.cumsum(self.cross, axis=axis),
        )

    def select(self, index: int, axis: int) -> Moments:
        """One position of a leading axis (``axis`` >= 0), e.g. the last look."""
        return Moments(
            np.take(self.n, index, axis=axis),
            np.take(self.sums, index, axis=axis),
            np.take(self.cross, index, axis=axis),
        )

    @property
    def mean(self) -> np.ndarray:
        """Means of ``(y, x, y_pre, x_pre)``, shape ``S + (4,)`` (NaN without units)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums / self.n[..., None]

    @property
    def cov(self) -> np.ndarray:
        """Sample covariance matrix (ddof 1), shape ``S + (4, 4)`` (NaN below two units)."""
        mu = self.mean
        n = self.n[..., None, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self.cross - n * mu[..., :, None] * mu[..., None, :]) / (n - 1)
