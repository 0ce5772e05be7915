"""Segment size and churn, from the membership change log.

Example:
    >>> from recsys.events.sqlite_store import SqliteStore
    >>> churn(SqliteStore(), "busy", 0, 10**16).entered
    0
"""

from __future__ import annotations

from dataclasses import dataclass

from recsys.events.store import RealtimeStore


@dataclass(frozen=True)
class ChurnReport:
    """Movement of one segment over ``[since_us, until_us)``.

    Attributes:
        segment: the segment.
        since_us: start of the period.
        until_us: end of the period (exclusive).
        size_start: members at ``since_us``.
        size_end: members at ``until_us``.
        entered: entries during the period.
        left: exits during the period.
        churn_rate: ``left / size_start`` (0 for an empty start).
    """

    segment: str
    since_us: int
    until_us: int
    size_start: int
    size_end: int
    entered: int
    left: int
    churn_rate: float


def segment_size(store: RealtimeStore, segment: str) -> int:
    """Current number of members."""
    return store.segment_size(segment)


def churn(store: RealtimeStore, segment: str, since_us: int, until_us: int) -> ChurnReport:
    """Entries, exits and sizes over a period, replayed from the change log
    (times are evaluation times: event time, or the sweep's clock)."""
    members: set[str] = set()
    size_start: int | None = None
    entered = left = 0
    for m in sorted(store.segment_log(segment=segment, until_us=until_us), key=lambda m: m.at_us):
        if size_start is None and m.at_us >= since_us:
            size_start = len(members)
        if m.at_us >= since_us:
            entered += m.entered
            left += not m.entered
        (members.add if m.entered else members.discard)(m.user_id)
    start = len(members) if size_start is None else size_start
    return ChurnReport(
        segment,
        since_us,
        until_us,
        start,
        len(members),
        entered,
        left,
        left / start if start else 0.0,
    )
