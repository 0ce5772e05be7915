"""Deterministic train/test splits of an interaction frame.

Three protocols, each a pure function of the frame and a seed:

* :func:`stratified_split` -- per-user or per-item random split (the Microsoft
  Recommenders MovieLens benchmark uses 75/25 stratified by item, seed 42).
* :func:`leave_last_out` -- chronological leave-one-out per user (sequential
  recommenders: the last interaction is the test, the one before validation).
* :func:`temporal_split` -- one global time cut-off: everything before it trains.

Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame({"user_id": [1, 1, 1, 2], "item_id": [5, 6, 7, 5]})
    >>> train, test = stratified_split(df, ratio=0.75, by="item", seed=42)
    >>> len(train) + len(test) == len(df)
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from recsys.data.frame import ITEM, TIMESTAMP, USER


@dataclass(frozen=True)
class SplitConfig:
    """How to split interactions (config group ``split``).

    Attributes:
        method: ``stratified`` | ``leave_last_out`` | ``temporal``.
        ratio: stratified: share of each group's rows that go to train.
        by: stratified: ``user`` or ``item``, the group that is stratified.
        min_rating: stratified: rows with a lower rating are dropped first
            (Recommenders' ``min_rating``; 1 keeps every MovieLens rating).
        seed: random seed of the stratified draw.
        valid: leave_last_out: also hold out the second-to-last interaction.
        test_start: temporal: ISO timestamp or quantile in (0, 1) of the time axis
            from which rows go to test.
    """

    method: Literal["stratified", "leave_last_out", "temporal"] = "stratified"
    ratio: float = 0.75
    by: Literal["user", "item"] = "item"
    min_rating: float | None = 1.0
    seed: int = 42
    valid: bool = False
    test_start: str | float = 0.8


@dataclass
class Split:
    """A split: train and test (and optionally validation) frames."""

    train: pd.DataFrame
    test: pd.DataFrame
    valid: pd.DataFrame | None = None


def stratified_split(
    df: pd.DataFrame,
    ratio: float = 0.75,
    by: Literal["user", "item"] = "item",
    seed: int = 42,
    min_rating: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Splits each user's (or item's) rows at random into train and test.

    The draw reproduces Microsoft Recommenders' ``python_stratified_split``: one
    uniform number per row from ``numpy.random.RandomState(seed).rand(n)`` in
    frame order, rows sorted by (group, draw), and the first
    ``round(ratio * count)`` rows of each group (numpy's round-half-even) go to
    train. Frame order therefore matters: load files in their original order.

    Args:
        df: interactions with ``user_id`` and ``item_id`` columns.
        ratio: share of each group's rows in train, in (0, 1).
        by: the column whose groups are split (``"user"`` or ``"item"``).
        seed: seed of the draw.
        min_rating: if set, rows with ``rating < min_rating`` are dropped first.

    Returns:
        ``(train, test)``, each keeping the input's columns and its index.
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    col = {"user": USER, "item": ITEM}.get(by)
    if col is None:
        raise ValueError(f"by must be 'user' or 'item', got {by!r}")
    if min_rating is not None and "rating" in df.columns:
        df = df[df["rating"] >= min_rating]
    draw = np.random.RandomState(seed).rand(len(df))
    keys = df[col].to_numpy()
    order = np.lexsort((draw, keys))  # last key is primary: group, then draw
    sorted_keys = keys[order]
    starts = np.r_[0, np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1]
    counts = np.diff(np.r_[starts, len(keys)])
    n_train = np.round(ratio * counts).astype(np.int64)  # round-half-even, as numpy
    rank_in_group = np.arange(len(keys)) - np.repeat(starts, counts)
    in_train = np.empty(len(keys), dtype=bool)
    in_train[order] = rank_in_group < np.repeat(n_train, counts)
    return df[in_train], df[~in_train]


def leave_last_out(df: pd.DataFrame, valid: bool = False) -> Split:
    """Chronological leave-one-out: each user's last interaction is the test.

    Ties in time are broken by frame order (the later row is the later event).
    Users with a single interaction stay entirely in train; with ``valid`` a user
    needs three interactions to contribute a validation row.

    Args:
        df: interactions with ``user_id`` and ``timestamp``.
        valid: also hold out each user's second-to-last interaction.

    Returns:
        A :class:`Split`.
    """
    pos = np.arange(len(df))
    order = np.lexsort((pos, df[TIMESTAMP].to_numpy(), df[USER].to_numpy()))
    users = df[USER].to_numpy()[order]
    is_last_of_user = np.r_[users[1:] != users[:-1], True]
    counts = pd.Series(users).map(pd.Series(users).value_counts()).to_numpy()
    # position from the end within each user's run: 0 for the last row
    run_end = np.flatnonzero(is_last_of_user)
    run_id = np.repeat(np.arange(len(run_end)), np.diff(np.r_[-1, run_end]))
    from_end = run_end[run_id] - np.arange(len(users))
    test_mask = (from_end == 0) & (counts >= 2)
    valid_mask = (from_end == 1) & (counts >= 3) & valid
    labels = np.zeros(len(df), dtype=np.int8)
    labels[order[test_mask]] = 2
    labels[order[valid_mask]] = 1
    return Split(
        train=df[labels == 0],
        test=df[labels == 2],
        valid=df[labels == 1] if valid else None,
    )


def temporal_split(df: pd.DataFrame, test_start: str | float | pd.Timestamp) -> Split:
    """Global time split: rows at or after ``test_start`` go to test.

    Args:
        df: interactions with ``timestamp`` (UTC).
        test_start: a timestamp (string or ``pd.Timestamp``), or a float in (0, 1)
            meaning that quantile of the timestamps.

    Returns:
        A :class:`Split`.
    """
    ts = df[TIMESTAMP]
    cut: pd.Timestamp
    if isinstance(test_start, float):
        if not 0.0 < test_start < 1.0:
            raise ValueError(f"a quantile test_start must be in (0, 1), got {test_start}")
        cut = pd.Timestamp(ts.quantile(test_start))  # type: ignore[arg-type]
    else:
        cut = pd.Timestamp(test_start)
        if cut.tzinfo is None:
            cut = cut.tz_localize("UTC")
    is_test = (ts >= cut).to_numpy()
    return Split(train=df[~is_test], test=df[is_test])


def split(df: pd.DataFrame, config: SplitConfig) -> Split:
    """Applies the split that ``config`` names."""
    if config.method == "stratified":
        train, test = stratified_split(df, config.ratio, config.by, config.seed, config.min_rating)
        return Split(train=train, test=test)
    if config.method == "leave_last_out":
        return leave_last_out(df, valid=config.valid)
    if config.method == "temporal":
        return temporal_split(df, config.test_start)
    raise ValueError(f"unknown split method {config.method!r}")
