"""Rating scales: which rating values a dataset may hold.

A loader keeps every rating on its configured scale (half stars included) and
rejects, with a count, the values off it; turning ratings into implicit
feedback is a separate, explicit step (``cleaning.implicit_threshold``).

Example:
    >>> half = RatingScale(min=0.5, max=5.0, step=0.5)
    >>> half.valid(np.array([0.5, 3.5, 5.0, 5.5, 4.25, np.nan])).tolist()
    [True, True, True, False, False, False]
    >>> half.describe()
    '0.5..5 in steps of 0.5'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.data.frame import DataConfigError

# Rounding slack when checking that a value is on the step grid (0.1 + 0.2 ...).
_GRID_TOLERANCE = 1e-6


@dataclass(frozen=True)
class RatingScale:
    """The valid rating values.

    Attributes:
        min: lowest valid rating (None: no lower bound).
        max: highest valid rating (None: no upper bound).
        step: ratings must be ``min + k * step`` (1.0 for whole stars, 0.5 for
            half stars); None accepts any value in ``[min, max]``.

    Example:
        >>> RatingScale(1, 5, 1).valid(np.array([1.0, 2.5, 6.0])).tolist()
        [True, False, False]
    """

    min: float | None = None
    max: float | None = None
    step: float | None = None

    def __post_init__(self) -> None:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise DataConfigError(f"rating_scale: min {self.min:g} is above max {self.max:g}")
        if self.step is not None:
            if self.step <= 0:
                raise DataConfigError(f"rating_scale: step must be positive, got {self.step:g}")
            if self.min is None:
                raise DataConfigError("rating_scale: a step needs a min (the first valid value)")

    def valid(self, ratings: np.ndarray) -> np.ndarray:
        """Mask of ratings on the scale (NaN is never valid).

        Args:
            ratings: float values.

        Returns:
            ``bool`` array aligned with ``ratings``.
        """
        values = np.asarray(ratings, dtype=np.float64)
        ok = np.isfinite(values)
        with np.errstate(invalid="ignore"):
            if self.min is not None:
                ok &= values >= self.min - _GRID_TOLERANCE
            if self.max is not None:
                ok &= values <= self.max + _GRID_TOLERANCE
            if self.step is not None and self.min is not None:
                k = (values - self.min) / self.step
                ok &= np.abs(k - np.round(k)) < _GRID_TOLERANCE
        return ok

    def describe(self) -> str:
        """Human-readable form, e.g. ``1..5 in steps of 1`` or ``any``."""
        if self.min is None and self.max is None:
            return "any number"
        low = "-inf" if self.min is None else f"{self.min:g}"
        high = "inf" if self.max is None else f"{self.max:g}"
        text = f"{low}..{high}"
        return text + (f" in steps of {self.step:g}" if self.step is not None else "")


#: Whole stars 1-5 (ML-100K, ML-1M).
STARS = RatingScale(min=1.0, max=5.0, step=1.0)
#: Half stars 0.5-5.0 (the ``ratings.csv`` layout: ML-20M, ML-25M, ML-32M).
HALF_STARS = RatingScale(min=0.5, max=5.0, step=0.5)

__all__ = ["HALF_STARS", "STARS", "RatingScale"]
