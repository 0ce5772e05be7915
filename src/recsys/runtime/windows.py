"""Counting each group's events in time windows, vectorized (numpy only).

The ranker's activity features (a user's or an item's interactions in the last
``d`` days before a request) are counted here, by :class:`WindowCounter`, for the
offline ranker data and at serving time alike (both through
:func:`recsys.runtime.dense_features.window_log_counts`), so both compute the same
numbers. Python 3.10 compatible: Triton's python backend imports it in NVIDIA's
container.

Example:
    >>> import numpy as np
    >>> offsets, times = np.array([0, 2, 3]), np.array([10.0, 20.0, 5.0])
    >>> count_in_window(offsets, times, np.array([0, 1]), np.array([0.0, 0.0]),
    ...                 np.array([15.0, 15.0])).tolist()
    [1, 1]
"""

from __future__ import annotations

import numpy as np


class WindowCounter:
    """Counts events per group in time windows, with the sort keys built once.

    Offsetting each group's times by a per-group constant (``span``, more than any
    time span or window) makes one global ``searchsorted`` answer every query; times
    are whole seconds, so every key and bound is an exact float64 integer and any
    separating span gives the same answer. The per-call cost is two ``searchsorted``
    over the queries only (:func:`count_in_window` is a one-off counter).

    Args:
        offsets: ``[G + 1]`` start of each group's run in ``times``.
        times: event times sorted by (group, time).
        max_window: the longest window that will be asked for (seconds).
    """

    def __init__(self, offsets: np.ndarray, times: np.ndarray, max_window: float) -> None:
        self.base = float(times.min()) if times.size else 0.0
        width = (float(times.max()) - self.base if times.size else 0.0) + 1.0
        self.span = (max(width, max_window) + 1.0) * 4.0
        groups = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        self.keys = (times - self.base) + groups * self.span

    def count(self, groups: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Events of ``groups[j]`` with a time in ``(lo[j], hi[j]]`` (int64)."""
        offset = groups * self.span - self.base
        # bounds outside the data's time range are clipped into the group's own slot
        # (both of them: a window wholly before or after the data counts nothing)
        top = self.span / 2 + self.base
        bottom = self.base - self.span / 4
        q_hi = np.clip(hi, bottom, top) + offset
        q_lo = np.clip(lo, bottom, top) + offset
        return (
            np.searchsorted(self.keys, q_hi, "right") - np.searchsorted(self.keys, q_lo, "right")
        ).astype(np.int64)


def count_in_window(
    offsets: np.ndarray,
    times: np.ndarray,
    groups: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
) -> np.ndarray:
    """Events of group ``groups[j]`` with a time in ``(lo[j], hi[j]]``, vectorized.

    A one-off :class:`WindowCounter` (the one implementation of the count) sized for
    the longest window asked for.

    Args:
        offsets: ``[G + 1]`` start of each group's run in ``times``.
        times: event times sorted by (group, time).
        groups: group of each query.
        lo: exclusive lower bound of each query.
        hi: inclusive upper bound of each query.

    Returns:
        int64 counts.
    """
    longest = float(np.max(np.asarray(hi) - np.asarray(lo), initial=0.0))
    return WindowCounter(offsets, times, longest).count(groups, lo, hi)
