"""The error every check of :mod:`recsys.ope` raises on bad input."""

from __future__ import annotations


class OPEInputError(ValueError):
    """Logged data or estimator inputs are unusable; the message names the field and rows.

    Example:
        >>> raise OPEInputError("pscore: 2 rows are <= 0 (first: row 7)")
        Traceback (most recent call last):
        ...
        recsys.ope.errors.OPEInputError: pscore: 2 rows are <= 0 (first: row 7)
    """
