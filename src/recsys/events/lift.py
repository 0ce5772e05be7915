"""Segment lift: a segment's members engage how much more than the other users?

For each segment ``S`` the exposures split in two: those whose user was in ``S`` when
the list was served (the exposure's ``segments`` holds ``S``: *members*) and all others
(*non-members*). Per group, the click-through rate is clicks per impression and the
conversion rate purchases per impression (each shown item is one impression; outcomes
join their exposure as :mod:`recsys.events.attribution` decides). The lift is the
members' rate over the non-members' rate, minus 1.

Interval: the delta method for a ratio of two ratio metrics, with each user as one
cluster. A user's clicks are correlated (one user clicks a lot, another never), so the
impressions are not independent trials; the users are. With per-user counts
``c_u, n_u`` (member exposures) and ``c'_u, n'_u`` (non-member exposures; one user can
have both, having joined or left the segment), the log of the lift ratio
``log(R) - log(R')`` (``R = sum c / sum n``) has the per-user linearization::

    psi_u = (c_u - R n_u) / sum c  -  (c'_u - R' n'_u) / sum c'

and variance ``G / (G - 1) * sum psi_u^2`` over the ``G`` users with exposures in
either group. The interval is ``exp(log(R / R') +- z se) - 1`` (always above -100 %).
This is the cluster-robust (sandwich) variance of a Poisson regression of clicks on
membership with the impressions as exposure, which ``tests/events/test_segment_lift.py``
checks against statsmodels, together with a user-level bootstrap and the coverage over
simulated datasets with a known lift.

Lists served without personalization hold no segments (their membership is unknown,
not absent): they are left out of every comparison. A segment with fewer than
``min_users`` member users (or non-member users), or without an outcome on either side,
gets its counts and rates but no lift: its row says why.

Example:
    >>> tally = SegmentTally()
    >>> segment_lift(tally)
    []
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

from recsys.events.attribution import (
    CLICKS,
    CONVERSIONS,
    Attribution,
    AttributionReport,
    Exposure,
)
from recsys.events.schema import EventType

METRICS: dict[str, str] = {"ctr": "clicks", "conversion_rate": "conversions"}
"""The metrics of a lift report and the outcome each counts (per impression)."""

MIN_USERS = 30
"""Default: the fewest users on each side for an interval."""

_IMPRESSIONS, _CLICKS, _CONVERSIONS = 0, 1, 2
_COLUMN = {"clicks": _CLICKS, "conversions": _CONVERSIONS}


@dataclass
class _User:
    total: list[int] = field(default_factory=lambda: [0, 0, 0])
    member: dict[str, list[int]] = field(default_factory=dict)


class SegmentTally:
    """Per user: impressions, clicks and conversions, in all and per segment the user was
    in when served. Fed one exposure and one join at a time (a consumer) or from a batch
    report (:meth:`from_report`); lists served without personalization are skipped
    (counted in :attr:`skipped`)."""

    def __init__(self) -> None:
        self._users: dict[str, _User] = {}
        self.skipped = 0

    @classmethod
    def from_report(cls, report: AttributionReport) -> SegmentTally:
        """The tally of a batch's exposures and joins."""
        return cls.of(report.exposures, report.attributions)

    @classmethod
    def of(cls, exposures: Iterable[Exposure], attributions: Iterable[Attribution]) -> SegmentTally:
        """The tally of exposures and their joins."""
        tally = cls()
        for exposure in exposures:
            tally.add_exposure(exposure)
        for joined in attributions:
            tally.add_attribution(joined)
        return tally

    def add_exposure(self, exposure: Exposure) -> None:
        """Counts an exposure's impressions for its user (and each of its segments)."""
        if not exposure.personalized:
            self.skipped += 1
            return
        user = self._users.setdefault(exposure.user_id, _User())
        n = len(exposure.items)
        user.total[_IMPRESSIONS] += n
        for segment in exposure.segments:
            user.member.setdefault(segment, [0, 0, 0])[_IMPRESSIONS] += n

    def add_attribution(self, joined: Attribution) -> None:
        """Counts a joined click or purchase (other outcomes do not enter a lift)."""
        kind = EventType(joined.type)
        column = _CLICKS if kind in CLICKS else _CONVERSIONS if kind in CONVERSIONS else None
        if column is None or not joined.personalized:
            return
        user = self._users.setdefault(joined.user_id, _User())
        user.total[column] += 1
        for segment in joined.segments:
            user.member.setdefault(segment, [0, 0, 0])[column] += 1

    @property
    def users(self) -> int:
        return len(self._users)

    def segments(self) -> list[str]:
        """Every segment some exposure was served in, sorted."""
        return sorted({s for u in self._users.values() for s in u.member})

    def split(self, segment: str) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Per user (one row each, the same order in both): ``[impressions, clicks,
        conversions]`` of the exposures in ``segment``, and of the others."""
        total = np.zeros((len(self._users), 3), dtype=np.int64)
        member = np.zeros_like(total)
        for i, user in enumerate(self._users.values()):
            total[i] = user.total
            counts = user.member.get(segment)
            if counts is not None:
                member[i] = counts
        return member, total - member


@dataclass(frozen=True)
class LiftEstimate:
    """A lift and its interval.

    Attributes:
        lift: members' rate / non-members' rate - 1.
        low: lower end of the interval.
        high: upper end.
        se_log: standard error of ``log(1 + lift)``.
        p_value: two-sided, for no lift.
    """

    lift: float
    low: float
    high: float
    se_log: float
    p_value: float


def ratio_lift(
    events: NDArray[np.integer] | Sequence[float],
    impressions: NDArray[np.integer] | Sequence[float],
    other_events: NDArray[np.integer] | Sequence[float],
    other_impressions: NDArray[np.integer] | Sequence[float],
    confidence: float = 0.95,
) -> LiftEstimate:
    """The lift of one ratio metric over another, per-user clusters (delta method).

    Args:
        events: per user, the outcomes of the first group (members).
        impressions: per user, its impressions (0 where the user has none).
        other_events: per user (same order), the outcomes of the second group.
        other_impressions: per user, the second group's impressions.
        confidence: of the interval.

    Returns:
        The estimate; see the module docstring for the method.

    Raises:
        ValueError: a group without impressions or outcomes, or fewer than 2 users.
    """
    c = np.asarray(events, dtype=np.float64)
    n = np.asarray(impressions, dtype=np.float64)
    c2 = np.asarray(other_events, dtype=np.float64)
    n2 = np.asarray(other_impressions, dtype=np.float64)
    if not c.shape == n.shape == c2.shape == n2.shape or c.ndim != 1:
        raise ValueError("the four arrays must be one-dimensional and of one length")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    sums = (c.sum(), n.sum(), c2.sum(), n2.sum())
    if min(sums) <= 0:
        raise ValueError("each group needs impressions and outcomes")
    users = int(np.count_nonzero((n > 0) | (n2 > 0)))
    if users < 2:
        raise ValueError("the interval needs at least 2 users")
    rate, rate2 = sums[0] / sums[1], sums[2] / sums[3]
    psi = (c - rate * n) / sums[0] - (c2 - rate2 * n2) / sums[2]
    se = math.sqrt(users / (users - 1) * float(np.sum(psi * psi)))
    log_ratio = math.log(rate / rate2)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = 2 * (1 - NormalDist().cdf(abs(log_ratio) / se)) if se > 0 else float(log_ratio == 0)
    return LiftEstimate(
        lift=math.exp(log_ratio) - 1,
        low=math.exp(log_ratio - z * se) - 1,
        high=math.exp(log_ratio + z * se) - 1,
        se_log=se,
        p_value=p,
    )


@dataclass(frozen=True)
class LiftRow:
    """One segment and metric of a lift report.

    Attributes:
        segment: the segment.
        metric: ``ctr`` or ``conversion_rate``.
        member_users: users with exposures served in the segment.
        member_impressions: their impressions in it.
        member_events: clicks (or conversions) on those impressions.
        member_rate: events per impression (None without impressions).
        other_users: users with exposures served outside the segment.
        other_impressions: those impressions.
        other_events: their clicks (or conversions).
        other_rate: events per impression (None without impressions).
        estimate: the lift and its interval, or None (see ``note``).
        note: why there is no estimate, or None.
    """

    segment: str
    metric: str
    member_users: int
    member_impressions: int
    member_events: int
    member_rate: float | None
    other_users: int
    other_impressions: int
    other_events: int
    other_rate: float | None
    estimate: LiftEstimate | None
    note: str | None

    def to_dict(self) -> dict[str, object]:
        """The row as plain values (the estimate's fields flattened, None without one)."""
        e = self.estimate
        return {
            "segment": self.segment,
            "metric": self.metric,
            "member_users": self.member_users,
            "member_impressions": self.member_impressions,
            "member_events": self.member_events,
            "member_rate": self.member_rate,
            "other_users": self.other_users,
            "other_impressions": self.other_impressions,
            "other_events": self.other_events,
            "other_rate": self.other_rate,
            "lift": None if e is None else e.lift,
            "ci_low": None if e is None else e.low,
            "ci_high": None if e is None else e.high,
            "p_value": None if e is None else e.p_value,
            "note": self.note,
        }


def segment_lift(
    tally: SegmentTally,
    segments: Sequence[str] | None = None,
    metrics: Sequence[str] = tuple(METRICS),
    confidence: float = 0.95,
    min_users: int = MIN_USERS,
) -> list[LiftRow]:
    """Each segment's members against the other users, per metric.

    Args:
        tally: per-user counts (:class:`SegmentTally`).
        segments: the segments to report (default: every one the tally saw).
        metrics: keys of :data:`METRICS`.
        confidence: of the intervals.
        min_users: the fewest users on each side for an estimate (at least 2).

    Returns:
        One row per segment and metric, segments sorted; rows without an estimate say
        why in ``note``.
    """
    bad = [m for m in metrics if m not in METRICS]
    if bad:
        raise ValueError(f"metrics must be among {tuple(METRICS)}, got {bad}")
    if min_users < 2:
        raise ValueError(f"min_users must be >= 2, got {min_users}")
    rows: list[LiftRow] = []
    for segment in segments if segments is not None else tally.segments():
        member, other = tally.split(segment)
        m_users = int(np.count_nonzero(member[:, _IMPRESSIONS]))
        o_users = int(np.count_nonzero(other[:, _IMPRESSIONS]))
        m_imps, o_imps = int(member[:, _IMPRESSIONS].sum()), int(other[:, _IMPRESSIONS].sum())
        for metric in metrics:
            outcome = METRICS[metric]
            col = _COLUMN[outcome]
            m_events, o_events = int(member[:, col].sum()), int(other[:, col].sum())
            note: str | None = None
            if m_users < min_users:
                note = f"too few members: {m_users} users (an interval needs {min_users})"
            elif o_users < min_users:
                note = f"too few non-members: {o_users} users (an interval needs {min_users})"
            elif m_events == 0 or o_events == 0:
                side = "members" if m_events == 0 else "non-members"
                note = f"no {outcome} among {side}: the ratio has no interval"
            estimate = None
            if note is None:
                estimate = ratio_lift(
                    member[:, col],
                    member[:, _IMPRESSIONS],
                    other[:, col],
                    other[:, _IMPRESSIONS],
                    confidence,
                )
            rows.append(
                LiftRow(
                    segment=segment,
                    metric=metric,
                    member_users=m_users,
                    member_impressions=m_imps,
                    member_events=m_events,
                    member_rate=m_events / m_imps if m_imps else None,
                    other_users=o_users,
                    other_impressions=o_imps,
                    other_events=o_events,
                    other_rate=o_events / o_imps if o_imps else None,
                    estimate=estimate,
                    note=note,
                )
            )
    return rows


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.1f} %"


def _rate(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f} %"


def render_lift_markdown(rows: Sequence[LiftRow], confidence: float = 0.95) -> str:
    """A markdown table of a lift report (sample sizes, rates, lift, interval, note)."""
    level = f"{100 * confidence:g} %"
    lines = [
        f"Lift = members' rate / non-members' rate - 1; {level} intervals by the delta "
        "method with each user as a cluster.",
        "",
        "| segment | metric | members: users | impressions | events | rate "
        f"| non-members: users | impressions | events | rate | lift | {level} interval "
        "| p | note |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|---|",
    ]
    for r in rows:
        e = r.estimate
        interval = "–" if e is None else f"[{_pct(e.low)}, {_pct(e.high)}]"
        p = "–" if e is None else f"{e.p_value:.3g}"
        lines.append(
            f"| {r.segment} | {r.metric} | {r.member_users:,} | {r.member_impressions:,} "
            f"| {r.member_events:,} | {_rate(r.member_rate)} | {r.other_users:,} "
            f"| {r.other_impressions:,} | {r.other_events:,} | {_rate(r.other_rate)} "
            f"| {_pct(None if e is None else e.lift)} | {interval} | {p} | {r.note or ''} |"
        )
    return "\n".join(lines) + "\n"
